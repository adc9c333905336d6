"""The PTB-XL benchmark's baselines after Wang et al. (2017), channels-last: ``resnet1d_wang`` and
``fcn_wang``. Both end in concat pooling (max, average) and the benchmark head."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import BenchmarkHead, ConvBN, concat_pool, materialize
from lead_kt.models.registry import BackboneOutput, register


class BasicBlock(nn.Module):
  """ConvBN(k0, strided) -> ConvBN(k1, no ReLU), plus an identity path projected by a strided
  conv1x1 + BN when the stride or width changes; then ReLU.
  ``[B, T, C_in]`` -> ``[B, ceil(T / strides), width]``."""

  width: int
  kernel_sizes: Sequence[int]
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    first, second = self.kernel_sizes
    y = ConvBN(self.width, first, self.strides, dtype=self.dtype)(x, train)
    y = ConvBN(self.width, second, relu=False, dtype=self.dtype)(y, train)
    identity = x
    if self.strides != 1 or x.shape[-1] != self.width:
      identity = ConvBN(self.width, 1, self.strides, relu=False, dtype=self.dtype)(x, train)
    return materialize(nn.relu(y + identity), x)


@register("resnet1d_wang")
class ResNet1dWang(nn.Module):
  """Stem ConvBN(7) -> three basic blocks of 128 channels (strides 1, 2, 2) -> head.

  ``x`` [B, T, leads] -> logits [B, C], features [B, 2 * width], feature_maps: each block's output
  [B, T_i, width]. 473,349 parameters for 5 classes and 12 leads.
  """

  num_classes: int
  dtype: Any = jnp.float32
  width: int = 128
  stem_kernel_size: int = 7
  kernel_sizes: Sequence[int] = (5, 3)
  strides: Sequence[int] = (1, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    x = ConvBN(self.width, self.stem_kernel_size, dtype=self.dtype)(x, train)
    feature_maps = []
    for strides in self.strides:
      x = BasicBlock(self.width, self.kernel_sizes, strides, dtype=self.dtype)(x, train)
      feature_maps.append(x)
    features = concat_pool(x)
    logits = BenchmarkHead(self.num_classes, dtype=self.dtype)(features, train)
    return BackboneOutput(logits, features, tuple(feature_maps))


@register("fcn_wang")
class FCNWang(nn.Module):
  """Three ConvBN-ReLU layers (128/256/128 filters, kernels 8/5/3, stride 1) -> head.

  PyTorch-style padding ``(k - 1) // 2`` makes the kernel-8 layer one sample shorter than its input.
  ``x`` [B, T, leads] -> logits [B, C], features [B, 2 * filters[-1]], feature_maps: each layer's
  output [B, T_i, filters_i]. 309,765 parameters for 5 classes and 12 leads.
  """

  num_classes: int
  dtype: Any = jnp.float32
  filters: Sequence[int] = (128, 256, 128)
  kernel_sizes: Sequence[int] = (8, 5, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    feature_maps = []
    for width, kernel_size in zip(self.filters, self.kernel_sizes, strict=True):
      x = ConvBN(width, kernel_size, materialize_output=True, dtype=self.dtype)(x, train)
      feature_maps.append(x)
    features = concat_pool(x)
    logits = BenchmarkHead(self.num_classes, dtype=self.dtype)(features, train)
    return BackboneOutput(logits, features, tuple(feature_maps))
