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

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import ConvBN, concat_pool
from lead_kt.models.registry import BackboneOutput, register


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

  def _lstm(self) -> nn.Module:
    cell = lambda features: nn.OptimizedLSTMCell(
      features, dtype=self.dtype, param_dtype=jnp.float32
    )
    if not self.bidirectional:
      return nn.RNN(cell(self.hidden_size))
    if self.hidden_size % 2:
      raise ValueError(
        f"reslstm_tse: bidirectional needs an even hidden_size, got {self.hidden_size}"
      )
    half = self.hidden_size // 2
    return nn.Bidirectional(nn.RNN(cell(half)), nn.RNN(cell(half)))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    x = x.astype(self.dtype)
    for features in self.conv_features:
      x = ConvBN(features, self.conv_kernel, 2, dtype=self.dtype)(x, train)
    feature_maps = [x]
    x = nn.Dense(self.hidden_size, dtype=self.dtype, param_dtype=jnp.float32)(x)
    for _ in range(self.num_layers):
      x = x + nn.Dropout(self.dropout, deterministic=not train)(self._lstm()(x)).astype(self.dtype)
      feature_maps.append(x)
    x = TemporalSqueezeExcitation(self.se_reduction, dtype=self.dtype)(x)
    feature_maps.append(x)
    features = concat_pool(x)
    hidden = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(hidden)
    return BackboneOutput(logits.astype(jnp.float32), features, tuple(feature_maps))
