"""ECGFounder's Net1D (Li et al., NEJM AI 2025; PKUDigitalHealth/ECGFounder ``net1d.py``),
channels-last.

A stem convolution (stride 2) and seven stages of pre-activation bottleneck blocks with
squeeze-and-excitation, Swish activations and grouped convolutions; global average pooling into one
Dense layer. Written to compute the reference's function, so that its released weights load
(``lead_kt.interop.from_torch("net1d", ...)``). Two details of the reference matter for that:

- every convolution pads "same" as TensorFlow does (``p = max(0, (ceil(T / s) - 1) * s + k - T)``,
  ``p // 2`` on the left, the rest on the right), which is XLA's ``"SAME"``;
- the strided identity path max-pools (window = stride) after padding with zeros, not -inf, on the
  right: the last window of an odd length is ``max(x[-1], 0)``.

Parameters start as PyTorch's defaults (weights and biases uniform in +-1/sqrt(fan_in)), as the
reference's do, so a new head (``from_torch(..., head_rng=...)``) starts as ECGFounder's
fine-tuning code (``finetune_model.py``) starts its ``nn.Linear``.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import BatchNorm, torch_default_bias_init, torch_default_kernel_init
from lead_kt.models.registry import BackboneOutput, register

# The reference's first convolution is strided by 2 whatever ``strides`` the stages use.
STEM_STRIDES = 2
SE_REDUCTION = 2
DROPOUT_RATE = 0.5


def _conv(x, features, kernel_size, strides=1, groups=1, dtype=jnp.float32, name=None):
  """A biased convolution with "same" padding and PyTorch's initialisation."""
  fan_in = kernel_size * x.shape[-1] // groups
  return nn.Conv(
    features,
    (kernel_size,),
    strides=(strides,),
    padding="SAME",
    feature_group_count=groups,
    kernel_init=torch_default_kernel_init,
    bias_init=torch_default_bias_init(fan_in),
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )(x)


def _dense(x, features, dtype=jnp.float32, name=None):
  return nn.Dense(
    features,
    kernel_init=torch_default_kernel_init,
    bias_init=torch_default_bias_init(x.shape[-1]),
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )(x)


def max_pool_same(x: jax.Array, window: int) -> jax.Array:
  """``[B, T, C]`` -> ``[B, ceil(T / window), C]``: the reference's MaxPool1dPadSame (stride =
  window, ``window - 1`` zeros split as the convolutions split their padding)."""
  pad = window - 1
  x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
  return nn.max_pool(x, (window,), strides=(window,), padding="VALID")


class Net1DBlock(nn.Module):
  """[BN] -> Swish -> [dropout] -> conv1x1, the same before a grouped conv k (strided) and before a
  conv1x1, then squeeze-and-excitation; plus the identity, max-pooled when strided and zero-padded
  on both channel sides when wider. The network's first block skips the first pre-activation.

  ``[B, T, C_in]`` -> ``[B, ceil(T / strides), features]``.
  """

  features: int
  kernel_size: int
  groups: int
  strides: int = 1
  ratio: float = 1.0
  first: bool = False
  use_bn: bool = False
  use_dropout: bool = False
  dtype: Any = jnp.float32

  def _preactivation(self, x: jax.Array, index: int, train: bool) -> jax.Array:
    if self.use_bn:
      x = BatchNorm(dtype=self.dtype, name=f"bn{index}")(x, train)
    x = nn.swish(x)
    if self.use_dropout:
      x = nn.Dropout(DROPOUT_RATE, deterministic=not train)(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    middle = int(self.features * self.ratio)
    y = x if self.first else self._preactivation(x, 1, train)
    y = _conv(y, middle, 1, dtype=self.dtype, name="conv1")
    y = self._preactivation(y, 2, train)
    y = _conv(y, middle, self.kernel_size, self.strides, self.groups, self.dtype, name="conv2")
    y = self._preactivation(y, 3, train)
    y = _conv(y, self.features, 1, dtype=self.dtype, name="conv3")

    gate = _dense(jnp.mean(y, axis=1), self.features // SE_REDUCTION, self.dtype, name="se_fc1")
    gate = nn.sigmoid(_dense(nn.swish(gate), self.features, self.dtype, name="se_fc2"))
    y = y * gate[:, None, :]

    identity = max_pool_same(x, self.strides) if self.strides > 1 else x
    extra = self.features - x.shape[-1]
    if extra < 0:
      raise ValueError(f"Net1DBlock: {x.shape[-1]} input channels exceed {self.features}")
    identity = jnp.pad(identity, ((0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return y + identity.astype(y.dtype)


@register("net1d")
class Net1D(nn.Module):
  """Stem conv k (stride 2) [-> BN] -> Swish -> stages of ``Net1DBlock`` (each stage's first block
  strided by ``strides``, grouped convolutions ``groups_width`` channels per group) -> average
  pooling -> Dense. The defaults are ECGFounder's released configuration (no BN, no dropout).

  ``x`` [B, T, leads] -> logits [B, C], features [B, filters[-1]], feature_maps: each stage's output
  [B, T_i, filters_i]. 12 leads, 150 classes: 30,752,646 parameters (leads=1: 30,741,382).
  """

  num_classes: int
  dtype: Any = jnp.float32
  base_filters: int = 64
  ratio: float = 1.0
  filters: Sequence[int] = (64, 160, 160, 400, 400, 1024, 1024)
  blocks: Sequence[int] = (2, 2, 2, 3, 3, 4, 4)
  kernel_size: int = 16
  strides: int = 2
  groups_width: int = 16
  use_bn: bool = False
  use_dropout: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    if len(self.filters) != len(self.blocks):
      raise ValueError(f"Net1D: {len(self.filters)} stage widths but {len(self.blocks)} depths")
    x = _conv(x, self.base_filters, self.kernel_size, STEM_STRIDES, dtype=self.dtype, name="stem")
    if self.use_bn:
      x = BatchNorm(dtype=self.dtype, name="stem_bn")(x, train)
    x = nn.swish(x)
    feature_maps = []
    for stage, (width, depth) in enumerate(zip(self.filters, self.blocks, strict=True)):
      for i in range(depth):
        x = Net1DBlock(
          width,
          self.kernel_size,
          groups=width // self.groups_width,
          strides=self.strides if i == 0 else 1,
          ratio=self.ratio,
          first=stage == 0 and i == 0,
          use_bn=self.use_bn,
          use_dropout=self.use_dropout,
          dtype=self.dtype,
          name=f"stage{stage}_block{i}",
        )(x, train)
      feature_maps.append(x)
    features = jnp.mean(x, axis=1)
    logits = _dense(features, self.num_classes, self.dtype, name="dense").astype(jnp.float32)
    return BackboneOutput(logits, features, tuple(feature_maps))
