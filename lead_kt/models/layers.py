"""Building blocks shared by the backbones (channels-last, ``[batch, time, channels]``).

Why flax.linen: ``module.apply`` is a pure function of explicit pytrees (``params`` and
``batch_stats``), so the trainer can shard, donate and checkpoint them as plain arrays without any
module surgery, and each method's pure ``loss(params, state, batch, rng)`` maps onto it directly.

Batch normalisation needs no ``axis_name``: the trainer jits over global arrays sharded on the batch
axis, so a mean over the batch axis already spans every device.
"""

import contextlib
import contextvars
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# fastai's init_cnn: PyTorch's kaiming_normal_ (an untruncated normal, std sqrt(2 / fan_in)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# PyTorch's default for Conv1d and Linear weights (kaiming_uniform_ with a = sqrt(5)): uniform in
# +-1/sqrt(fan_in), fan_in = in_channels / groups * kernel_size.
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Callable:
  """PyTorch's default Conv1d / Linear bias: uniform in +-1/sqrt(fan_in) of the layer's weight
  (a Flax bias initialiser sees only the bias shape, so the fan-in is given here)."""
  bound = fan_in**-0.5

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """Batch norm over all axes but the last, with statistics in float32 (also in bfloat16 mode).

  Same parameters (``scale``, ``bias``), collection (``batch_stats``: ``mean``, ``var``) and
  semantics as ``nn.BatchNorm(momentum=0.9, epsilon=1e-5)`` (PyTorch's momentum 0.1), but the mean
  and the mean of squares come from one pass over the input, which is faster on CPU, and the
  running variance averages the unbiased batch variance, as PyTorch's BatchNorm1d does: the
  reference networks are PyTorch's, and their trained statistics load as they are
  (``lead_kt.interop``).
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """``x`` [..., C] -> [..., C] in ``dtype``, normalised by batch (train) or running stats."""
    channels = x.shape[-1]
    scale = self.param("scale", self.scale_init, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
    if train:
      mean, var = _moments(x)
      if not self.is_initializing():
        keep = self.momentum
        running_mean.value = keep * running_mean.value + (1.0 - keep) * mean
        count = x.size // channels
        unbiased_var = var * (count / max(count - 1, 1))
        running_var.value = keep * running_var.value + (1.0 - keep) * unbiased_var
    else:
      mean, var = running_mean.value, running_var.value
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    shift = bias - mean * multiplier
    return x.astype(self.dtype) * multiplier.astype(self.dtype) + shift.astype(self.dtype)


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance of ``x`` [..., C] in float32.

  The mean and the mean of squares are two plain reductions of the same input, which XLA fuses
  into one pass. (A single ``lax.reduce`` over the pair with a custom reducer was one pass too,
  but its gradient became a tree of thousands of slices and pads: slower to compile and to run.)
  """
  x = x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  return mean, jnp.maximum(jnp.mean(jnp.square(x), axis=axes) - jnp.square(mean), 0.0)


class ConvBN(nn.Module):
  """Bias-free convolution -> BatchNorm -> optional ReLU (fastai's ConvLayer, PyTorch padding).

  The padding is ``(k - 1) // 2`` on both sides, as the reference PyTorch networks use, so a stride
  ``s`` maps length ``T`` to ``(T + 2 * ((k - 1) // 2) - k) // s + 1``.
  """

  features: int
  kernel_size: int
  strides: int = 1
  relu: bool = True
  zero_scale: bool = False  # fastai's BatchZero: the block's last BN starts as a zero gate
  # On XLA:CPU, computes the output once instead of inside every consumer (``materialize``). It
  # pays where BN and ReLU were re-evaluated in the weight gradients' transposes (fcn_wang's step
  # -5 to -10 %), but costs a pass where they were not (xresnet1d50 +10 %): chosen per network.
  materialize_output: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """``x`` [B, T, C_in] -> [B, T', features]."""
    pad = (self.kernel_size - 1) // 2
    y = nn.Conv(
      self.features,
      (self.kernel_size,),
      strides=(self.strides,),
      padding=[(pad, pad)],
      use_bias=False,
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      conv_general_dilated=conv_general_dilated,
    )(x)
    scale_init = nn.initializers.zeros if self.zero_scale else nn.initializers.ones
    y = BatchNorm(dtype=self.dtype, scale_init=scale_init)(y, train)
    y = nn.relu(y) if self.relu else y
    return materialize(y, x) if self.materialize_output else y


def materialize(x: jax.Array, anchor: Any) -> jax.Array:
  """Returns ``x`` unchanged, but on XLA:CPU as a value computed once instead of inside each
  consumer.

  XLA:CPU would otherwise re-evaluate a residual block's elementwise tail (BN, add, ReLU) inside
  every fusion that reads the block output, which made a training step ~4x slower. XLA does not
  duplicate a division into consumers, and a divisor of 1.0 built from a runtime value (the first
  leaf of ``anchor``, e.g. the block's parameters) cannot be folded away.
  (``lax.optimization_barrier`` is stripped on CPU.) The division is chosen when the computation
  is lowered, for CPU only: on a GPU or TPU it would be one more elementwise pass per block. Under
  ``without_cpu_workarounds`` (converters that never reach XLA, e.g. ONNX) ``x`` is returned.
  """
  if not _cpu_workarounds.get():
    return x
  return jax.lax.platform_dependent(
    x, jax.tree.leaves(anchor)[0], cpu=_divide_by_runtime_one, default=lambda x, _: x
  )


def _divide_by_runtime_one(x: jax.Array, leaf: jax.Array) -> jax.Array:
  runtime_zero = 0.0 * jax.lax.stop_gradient(leaf.reshape(-1)[0])
  return x / (1.0 + runtime_zero).astype(x.dtype)


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  precision: Any = None,
) -> jax.Array:
  """``jax.lax.conv_general_dilated`` (the signature ``nn.Conv`` calls), but on XLA:CPU a 1-D
  convolution whose input or output is no longer than its kernel runs as patches times a matrix.

  XLA:CPU's convolution falls off its fast path when the window covers the whole (padded) input:
  a kernel-16 convolution of 256 channels over 8 steps took 117 ms forward and 240 ms with its
  gradients, against 9 ms as patches and a dot (kernel 5 over 4 steps: 114 vs 5 ms); the late,
  short layers of cnn_hannun spent most of its training step there (docs/benchmarks.md). Other
  shapes, and every other platform, keep the convolution.
  """
  conv = functools.partial(
    jax.lax.conv_general_dilated,
    window_strides=window_strides,
    padding=padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    precision=precision,
  )
  pads = _short_1d_conv_pads(
    lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers
  )
  if pads is None or feature_group_count != 1 or not _cpu_workarounds.get():
    return conv(lhs, rhs)
  stride = window_strides[0]
  as_patches = functools.partial(_patches_conv, stride=stride, pads=pads, precision=precision)
  return jax.lax.platform_dependent(lhs, rhs, cpu=as_patches, default=conv)


def _short_1d_conv_pads(
  lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers
) -> tuple[int, int] | None:
  """The (low, high) padding of a channels-last 1-D convolution without dilation whose input or
  output is no longer than its kernel; None for any other convolution."""
  if lhs.ndim != 3 or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    return None
  channels_last = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NWC", "WIO", "NWC"))
  if dimension_numbers is not None and (
    jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != channels_last
  ):
    return None
  length, kernel = lhs.shape[1], rhs.shape[0]
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads((length,), (kernel,), window_strides, padding)
  ((low, high),) = padding
  out_length = (length + low + high - kernel) // window_strides[0] + 1
  if min(low, high) < 0 or out_length < 1 or min(length, out_length) > kernel:
    return None
  return low, high


def _patches_conv(lhs, rhs, stride: int, pads: tuple[int, int], precision: Any) -> jax.Array:
  """``lhs`` [B, T, C_in] * ``rhs`` [K, C_in, C_out] as [B, T', K, C_in] windows . [K, C_in, C_out]
  (its gradients are dots and strided slices, which XLA:CPU runs fast at any length)."""
  kernel = rhs.shape[0]
  padded = jnp.pad(lhs, ((0, 0), pads, (0, 0)))
  out_length = (padded.shape[1] - kernel) // stride + 1
  span = (out_length - 1) * stride + 1
  windows = jnp.stack([padded[:, tap : tap + span : stride] for tap in range(kernel)], axis=2)
  return jnp.einsum("btkc,kco->bto", windows, rhs, precision=precision)


# Whether models trace XLA:CPU's workarounds (chosen per platform when lowered); see
# ``without_cpu_workarounds``.
_cpu_workarounds = contextvars.ContextVar("lead_kt_cpu_workarounds", default=True)


@contextlib.contextmanager
def without_cpu_workarounds():
  """Traces the models without XLA:CPU's workarounds, for converters of the traced function that
  are not XLA (jax2onnx knows no ``platform_index``, which ``platform_dependent`` traces to).

  Only fresh traces see it: JAX reuses its trace of a function (e.g. a ``jax.jit``) traced before.
  """
  token = _cpu_workarounds.set(False)
  try:
    yield
  finally:
    _cpu_workarounds.reset(token)


def concat_pool(x: jax.Array, max_first: bool = True) -> jax.Array:
  """``[B, T, C]`` -> ``[B, 2C]``: global max and average over time, concatenated."""
  pools = [jnp.max(x, axis=1), jnp.mean(x, axis=1)]
  return jnp.concatenate(pools if max_first else pools[::-1], axis=-1)


class BenchmarkHead(nn.Module):
  """The PTB-XL benchmark head after pooling: BN -> Dropout(0.25) -> Dense(128) -> ReLU -> BN ->
  Dropout(0.5) -> Dense(C). ``[B, F]`` -> logits ``[B, C]`` (float32)."""

  num_classes: int
  hidden: int = 128
  dropout_rates: tuple[float, float] = (0.25, 0.5)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> jax.Array:
    dense = lambda width: nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32)
    first_rate, second_rate = self.dropout_rates
    x = BatchNorm(dtype=self.dtype)(features, train)
    x = nn.Dropout(first_rate, deterministic=not train)(x)
    x = nn.relu(dense(self.hidden)(x))
    x = BatchNorm(dtype=self.dtype)(x, train)
    x = nn.Dropout(second_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)
