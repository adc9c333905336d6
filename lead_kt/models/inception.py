"""The PTB-XL benchmark's inception1d (InceptionTime-style, Strodthoff et al. 2021), channels-last.

Six inception blocks of 32 filters per branch (kernels 39/19/9 after a 32-wide bottleneck, plus a
max-pool branch), a residual shortcut around every three, concat pooling (max, average) into the
benchmark head. 507,653 parameters for 5 classes and 12 leads.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import (
  BatchNorm,
  BenchmarkHead,
  ConvBN,
  concat_pool,
  conv_general_dilated,
  conv_init,
)
from lead_kt.models.registry import BackboneOutput, register


class InceptionBlock(nn.Module):
  """Bottleneck conv1x1 -> parallel convs of ``kernel_sizes``, beside MaxPool(3) -> conv1x1; the
  branches are concatenated, then BN -> ReLU. ``[B, T, C]`` -> ``[B, T, filters * (len(kss) + 1)]``.
  """

  filters: int
  kernel_sizes: Sequence[int]
  bottleneck: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    def conv(width, kernel_size):
      pad = (kernel_size - 1) // 2
      return nn.Conv(
        width,
        (kernel_size,),
        padding=[(pad, pad)],
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=conv_general_dilated,
      )

    bottled = conv(self.bottleneck, 1)(x)
    branches = [conv(self.filters, k)(bottled) for k in self.kernel_sizes]
    pooled = nn.max_pool(x, (3,), strides=(1,), padding=[(1, 1)])
    branches.append(conv(self.filters, 1)(pooled))
    y = BatchNorm(dtype=self.dtype)(jnp.concatenate(branches, axis=-1), train)
    return nn.relu(y)


@register("inception1d")
class Inception1d(nn.Module):
  """``x`` [B, T, leads] -> logits [B, C], features [B, 2 * 4 * filters], feature_maps: the output
  of each residual group of three blocks, [B, T, 4 * filters]."""

  num_classes: int
  dtype: Any = jnp.float32
  depth: int = 6
  filters: int = 32
  bottleneck: int = 32
  kernel_sizes: Sequence[int] = (39, 19, 9)
  residual_every: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    if self.depth % self.residual_every:
      raise ValueError(
        f"Inception1d: depth {self.depth} is not a multiple of residual_every {self.residual_every}"
      )
    width = self.filters * (len(self.kernel_sizes) + 1)
    group_input = x
    feature_maps = []
    block = lambda: InceptionBlock(self.filters, self.kernel_sizes, self.bottleneck, self.dtype)
    for d in range(self.depth):
      x = block()(x, train)
      if d % self.residual_every == self.residual_every - 1:
        shortcut = ConvBN(width, 1, relu=False, dtype=self.dtype)(group_input, train)
        x = nn.relu(x + shortcut)
        group_input = x
        feature_maps.append(x)
    features = concat_pool(x)
    logits = BenchmarkHead(self.num_classes, dtype=self.dtype)(features, train)
    return BackboneOutput(logits, features, tuple(feature_maps))
