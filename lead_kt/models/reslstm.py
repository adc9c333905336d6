"""Residual LSTM with a temporally attended squeeze-and-excitation ("reslstm_tse").

Layout for ``[B, T, leads]`` input with the defaults (H = ``hidden_size`` = 128, N = ceil(T / 8)):

  front end    3 x [conv(kernel 7, stride 2, pad 3, no bias) + BN + ReLU],
               32/64/128 channels                                                  [B, N, 128]
  projection   Dense(H)                                                            [B, N, H]
  2 layers     x = x + dropout(BiLSTM(x)), H / 2 units per direction               [B, N, H]
  temporal SE  attention weights a = softmax_t(Dense(1)(x))                        [B, N, 1]
               squeeze s = sum_t a_t x_t                                           [B, H]
               excitation e = sigmoid(Dense(H)(ReLU(Dense(H / 4)(s))))             [B, H]
               x = x * e (every step rescaled per channel)                         [B, N, H]
  pooling      concat(max_t x, mean_t x)                                           [B, 2H]
  head         dropout, Dense(num_classes)

The strided front end shortens 1000 samples to 125 LSTM steps (250 to 32). ``feature_maps`` holds
the front-end output, each LSTM layer's output and the rescaled sequence (last). Trainable
parameters for 12 leads and 5 classes with the defaults: 298,726 (front end 74,816; projection
16,512; LSTMs 4 x 49,408; SE 8,481; head 1,285).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import ConvBN, concat_pool
from lead_kt.models.registry import BackboneOutput, register

_GATES = ("i", "f", "g", "o")


class _DenseParams(nn.Module):
  """A Dense layer's variables only (``kernel`` [in, features], ``bias``), for LSTMCellParams."""

  features: int
  use_bias: bool
  kernel_init: Callable

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param("kernel", self.kernel_init, (in_features, self.features), jnp.float32)
    if not self.use_bias:
      return kernel, None
    return kernel, self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)


class LSTMCellParams(nn.Module):
  """The variables of flax's ``nn.OptimizedLSTMCell``, same names, shapes and initialisers (input
  kernels ``i{gate}``, hidden kernels and biases ``h{gate}``), concatenated over the gates i, f, g,
  o: ``in_features`` -> (input kernel [in, 4F], hidden kernel [F, 4F], bias [4F])."""

  features: int

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    dense = lambda name, use_bias, init: _DenseParams(self.features, use_bias, init, name=name)
    inputs = [
      dense(f"i{gate}", False, nn.initializers.lecun_normal())(in_features)[0] for gate in _GATES
    ]
    hidden = [
      dense(f"h{gate}", True, nn.initializers.orthogonal())(self.features) for gate in _GATES
    ]
    return (
      jnp.concatenate(inputs, axis=-1),
      jnp.concatenate([kernel for kernel, _ in hidden], axis=-1),
      jnp.concatenate([bias for _, bias in hidden], axis=-1),
    )


def fused_lstm(x: jax.Array, cells: Sequence[tuple], dtype: Any) -> jax.Array:
  """LSTM layer(s) of ``cells`` (LSTMCellParams' triples; with two, the second reads time
  backwards) over ``x`` [B, N, H] -> [B, N, sum of features], from zero states.

  The same arithmetic as flax's ``nn.Bidirectional(nn.RNN(OptimizedLSTMCell))``, arranged as
  PyTorch's and cuDNN's LSTMs are: the input projection of every step is one matrix product before
  the loop, both directions advance in the same loop, and the gradient is written by hand
  (``_recurrence``), so each step of either loop is one product with the hidden kernels and one
  elementwise pass. The state and the gates are float32 in every dtype.
  """
  in_kernels, hidden_kernels, biases = zip(*cells, strict=True)
  hidden_kernels, biases = jnp.stack(hidden_kernels), jnp.stack(biases)
  directions, batch, steps = len(cells), x.shape[0], x.shape[1]
  # One plain [B * N, H] x [H, D * 4F] product, then time-major: XLA:CPU ran the same product
  # with a time-major result 3x slower.
  in_kernel = jnp.concatenate(in_kernels, axis=-1).astype(dtype)
  projected = (x.astype(dtype) @ in_kernel).reshape(batch, steps, directions, -1)
  projected = jnp.transpose(projected, (1, 2, 0, 3)) + biases[:, None, :].astype(dtype)
  if directions == 2:
    projected = jnp.stack([projected[:, 0], projected[::-1, 1]], axis=1)
  outputs = _recurrence(projected.astype(jnp.float32), hidden_kernels.astype(jnp.float32))
  if directions == 2:
    outputs = jnp.stack([outputs[:, 0], outputs[::-1, 1]], axis=1)
  return jnp.concatenate(list(jnp.moveaxis(outputs.astype(dtype), 0, 2)), axis=-1)


def _gates(pre_activations: jax.Array) -> jax.Array:
  """[..., 4F] pre-activations -> the gates i, f, g, o (sigmoid, sigmoid, tanh, sigmoid)."""
  i, f, g, o = jnp.split(pre_activations, 4, axis=-1)
  return jnp.concatenate([jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)], -1)


def _forward_loop(projected: jax.Array, hidden_kernels: jax.Array):
  """``projected`` [N, D, B, 4F], ``hidden_kernels`` [D, F, 4F] -> hidden states [N, D, B, F],
  cell states [N, D, B, F] and gates [N, D, B, 4F]."""
  directions, batch, width = projected.shape[1], projected.shape[2], hidden_kernels.shape[1]
  zeros = jnp.zeros((directions, batch, width), projected.dtype)

  def step(carry, inputs):
    cell, hidden = carry
    gates = _gates(inputs + jnp.einsum("dbf,dfk->dbk", hidden, hidden_kernels))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    cell = f * cell + i * g
    hidden = o * jnp.tanh(cell)
    return (cell, hidden), (hidden, cell, gates)

  return jax.lax.scan(step, (zeros, zeros), projected)[1]


@jax.custom_vjp
def _recurrence(projected: jax.Array, hidden_kernels: jax.Array) -> jax.Array:
  """The LSTM recurrence from zero states: ``projected`` [N, D, B, 4F] (input products plus
  biases, time-major) and ``hidden_kernels`` [D, F, 4F] -> hidden states [N, D, B, F].

  Its gradient is back-propagation through time with one product and one elementwise pass per
  step; the kernels' gradient is a single product after the loop. JAX's own gradient of the scan
  ran about 20 small operations per step and stored 13 stacks of residuals, and XLA:CPU's cost per
  operation made reslstm_tse's step 0.64x PyTorch eager (docs/benchmarks.md).
  """
  return _forward_loop(projected, hidden_kernels)[0]


def _recurrence_forward(projected, hidden_kernels):
  hidden, cell, gates = _forward_loop(projected, hidden_kernels)
  return hidden, (hidden, cell, gates, hidden_kernels)


def _recurrence_backward(residuals, hidden_grads):
  hidden, cell, gates, hidden_kernels = residuals
  previous_cell = jnp.concatenate([jnp.zeros_like(cell[:1]), cell[:-1]])

  def step(carry, inputs):
    hidden_grad_next, cell_grad_next = carry
    hidden_grad, cell_t, cell_prev, gates_t = inputs
    i, f, g, o = jnp.split(gates_t, 4, axis=-1)
    hidden_grad = hidden_grad + hidden_grad_next
    tanh_cell = jnp.tanh(cell_t)
    cell_grad = cell_grad_next + hidden_grad * o * (1.0 - tanh_cell**2)
    pre_activation_grads = jnp.concatenate(
      [
        cell_grad * g * i * (1.0 - i),
        cell_grad * cell_prev * f * (1.0 - f),
        cell_grad * i * (1.0 - g**2),
        hidden_grad * tanh_cell * o * (1.0 - o),
      ],
      axis=-1,
    )
    hidden_grad_prev = jnp.einsum("dbk,dfk->dbf", pre_activation_grads, hidden_kernels)
    return (hidden_grad_prev, cell_grad * f), pre_activation_grads

  zeros = jnp.zeros_like(hidden[0])
  inputs = (hidden_grads, cell, previous_cell, gates)
  projected_grads = jax.lax.scan(step, (zeros, zeros), inputs, reverse=True)[1]
  previous_hidden = jnp.concatenate([jnp.zeros_like(hidden[:1]), hidden[:-1]])
  kernel_grads = jnp.einsum("ndbf,ndbk->dfk", previous_hidden, projected_grads)
  return projected_grads, kernel_grads


_recurrence.defvjp(_recurrence_forward, _recurrence_backward)


class TemporalSqueezeExcitation(nn.Module):
  """Squeeze-and-excitation whose squeeze is softmax attention over time.

  ``[B, N, C] -> [B, N, C]``: a learned score per step weights the channel descriptor, so a few
  informative beats can drive the channel gates instead of the whole-record average.
  """

  reduction: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    dense = lambda features: nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32)
    scores = dense(1)(x).astype(jnp.float32)
    weights = jax.nn.softmax(scores, axis=1)
    descriptor = jnp.sum(weights * x.astype(jnp.float32), axis=1).astype(self.dtype)
    gates = nn.sigmoid(dense(channels)(nn.relu(dense(channels // self.reduction)(descriptor))))
    return x * gates[:, None, :]


@register("reslstm_tse")
class ResLSTMTemporalSE(nn.Module):
  """Strided conv front end, residual (Bi)LSTM stack, temporal SE, concat pooling.

  ``[B, T, leads] -> BackboneOutput`` with ``2 * hidden_size`` features.
  """

  num_classes: int
  conv_features: Sequence[int] = (32, 64, 128)
  conv_kernel: int = 7
  hidden_size: int = 128
  num_layers: int = 2
  bidirectional: bool = True
  se_reduction: int = 4
  dropout: float = 0.2
  dtype: Any = jnp.float32

  def _lstm(self, x: jax.Array, layer: int) -> jax.Array:
    """One (Bi)LSTM layer over ``x`` [B, N, H] -> [B, N, H], both directions in one scan."""
    if self.bidirectional and self.hidden_size % 2:
      raise ValueError(
        f"reslstm_tse: bidirectional needs an even hidden_size, got {self.hidden_size}"
      )
    directions = 2 if self.bidirectional else 1
    # Named as flax's nn.RNN(OptimizedLSTMCell) names its cells, forward first: checkpoints and
    # lead_kt.interop's PyTorch twin read the same tree.
    cells = [
      LSTMCellParams(self.hidden_size // directions, name=f"OptimizedLSTMCell_{cell}")(x.shape[-1])
      for cell in range(directions * layer, directions * (layer + 1))
    ]
    return fused_lstm(x, cells, self.dtype)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    x = x.astype(self.dtype)
    for features in self.conv_features:
      x = ConvBN(features, self.conv_kernel, 2, dtype=self.dtype)(x, train)
    feature_maps = [x]
    x = nn.Dense(self.hidden_size, dtype=self.dtype, param_dtype=jnp.float32)(x)
    for layer in range(self.num_layers):
      x = x + nn.Dropout(self.dropout, deterministic=not train)(self._lstm(x, layer)).astype(
        self.dtype
      )
      feature_maps.append(x)
    x = TemporalSqueezeExcitation(self.se_reduction, dtype=self.dtype)(x)
    feature_maps.append(x)
    features = concat_pool(x)
    hidden = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(hidden)
    return BackboneOutput(logits.astype(jnp.float32), features, tuple(feature_maps))
