"""Hannun et al. (2019) 34-layer residual CNN for ECG ("cnn_hannun").

Layout for ``[B, T, leads]`` input (same-padded convolutions of kernel 16 throughout):

  stem        conv(32) + BN + ReLU                               [B, T, 32]
  16 blocks   two convs each; block i has 32 * 2**(i // 4) channels, stride 2 on odd i
              (the shortcut max-pools by 2 and zero-pads channels where they grow)
              stage outputs after blocks 3, 7, 11                [B, T/4, 32], [B, T/16, 64],
                                                                 [B, T/64, 128]
  final       BN + ReLU                                          [B, T/256, 256]
  pool        global average over time                           [B, 256]
  head        Dense(num_classes)

(T/k means ceil(T / k).) Trainable parameters for 12 leads and 5 classes: 10,472,037, the count of
the paper's network with a Dense(256 -> 5) head: 33 biased convolutions (10,463,008), 33 BatchNorm
scale/offset pairs (7,744) and the head (1,285).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import BatchNorm, conv_general_dilated, conv_init, materialize
from lead_kt.models.registry import BackboneOutput, register


def _conv(features: int, kernel_size: int, stride: int, dtype: Any) -> nn.Conv:
  """Biased, TF-style same-padded convolution (the original is Keras), He-normal initialised."""
  return nn.Conv(
    features,
    (kernel_size,),
    strides=(stride,),
    padding="SAME",
    kernel_init=conv_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    conv_general_dilated=conv_general_dilated,
  )


class HannunBlock(nn.Module):
  """Residual block: [BN-ReLU]-conv(stride)-BN-ReLU-dropout-conv, plus a pooled, padded shortcut.

  ``[B, T, C_in] -> [B, ceil(T / stride), features]``.
  """

  features: int
  stride: int
  kernel_size: int
  dropout: float
  preactivate: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block_input = shortcut = x
    if self.stride > 1:
      shortcut = nn.max_pool(shortcut, (self.stride,), (self.stride,), padding="SAME")
    extra_channels = self.features - x.shape[-1]
    if extra_channels > 0:
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, extra_channels)))
    if self.preactivate:
      x = nn.relu(BatchNorm(dtype=self.dtype)(x, train))
    x = _conv(self.features, self.kernel_size, self.stride, self.dtype)(x)
    x = nn.relu(BatchNorm(dtype=self.dtype)(x, train))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = _conv(self.features, self.kernel_size, 1, self.dtype)(x)
    return materialize(x + shortcut, block_input)


@register("cnn_hannun")
class HannunCNN(nn.Module):
  """Hannun et al.'s 34-layer network; ``[B, T, leads] -> BackboneOutput`` with 256 features.

  Any length T >= 1 works (strided layers round up); the last map has ``ceil(T / 256)`` steps.
  """

  num_classes: int
  base_features: int = 32
  num_blocks: int = 16
  blocks_per_width: int = 4
  kernel_size: int = 16
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    x = _conv(self.base_features, self.kernel_size, 1, self.dtype)(x.astype(self.dtype))
    x = nn.relu(BatchNorm(dtype=self.dtype)(x, train))
    feature_maps = []
    for index in range(self.num_blocks):
      x = HannunBlock(
        features=self.base_features * 2 ** (index // self.blocks_per_width),
        stride=2 if index % 2 else 1,
        kernel_size=self.kernel_size,
        dropout=self.dropout,
        preactivate=index > 0,
        dtype=self.dtype,
      )(x, train)
      if (index + 1) % self.blocks_per_width == 0 and index + 1 < self.num_blocks:
        feature_maps.append(x)
    x = nn.relu(BatchNorm(dtype=self.dtype)(x, train))
    feature_maps.append(x)
    features = jnp.mean(x, axis=1)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(features)
    logits = logits.astype(jnp.float32)
    return BackboneOutput(logits, features, tuple(feature_maps))
