"""1-D XResNets (fastai's xresnet with bottleneck blocks), channels-last.

``xresnet1d101`` and ``xresnet1d50`` are the PTB-XL benchmark's (Strodthoff et al. 2021): kernel 5,
stem 32/32/64, every stage 64 wide x expansion 4 (256 out), concat pooling (max, average) into the
benchmark head. ``xresnet1d101_wide`` is the MVKT-ECG code's "XResNet1d101": kernel 3, stem
32/64/64, stage widths 64/128/256/512 x 4 (2048 out), pooling (average, max) into one Dense layer.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import BenchmarkHead, ConvBN, concat_pool, materialize
from lead_kt.models.registry import BackboneOutput, register


class BottleneckBlock(nn.Module):
  """conv1x1 -> conv k (strided) -> conv1x1 (zero-gated BN), plus an identity path that
  average-pools (window 2, ceil mode) when strided and projects (conv1x1 + BN) when the width
  changes; then ReLU.

  ``[B, T, C_in]`` -> ``[B, ceil(T / strides), hidden * expansion]``.
  """

  hidden: int
  expansion: int
  kernel_size: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_width = self.hidden * self.expansion
    y = ConvBN(self.hidden, 1, dtype=self.dtype)(x, train)
    y = ConvBN(self.hidden, self.kernel_size, self.strides, dtype=self.dtype)(y, train)
    y = ConvBN(out_width, 1, relu=False, zero_scale=True, dtype=self.dtype)(y, train)
    identity = x
    if self.strides != 1:
      # PyTorch's AvgPool1d(2, ceil_mode=True): a last, partial window averages what it covers.
      overhang = -identity.shape[1] % self.strides
      identity = nn.avg_pool(
        identity,
        (self.strides,),
        strides=(self.strides,),
        padding=[(0, overhang)],
        count_include_pad=False,
      ).astype(x.dtype)  # the window counts are float32
    if identity.shape[-1] != out_width:
      identity = ConvBN(out_width, 1, relu=False, dtype=self.dtype)(identity, train)
    return materialize(nn.relu(y + identity), self.variables["params"])


class XResNet1d(nn.Module):
  """Stem (three ConvBN, the first strided, then MaxPool(3, 2, pad 1)) -> bottleneck stages (the
  first stride 1, the others 2) -> concat pooling -> head.

  ``x`` [B, T, leads] -> logits [B, C], features [B, 2 * widths[-1] * expansion], feature_maps: each
  stage's output [B, T_i, widths[i] * expansion].
  """

  num_classes: int
  dtype: Any = jnp.float32
  blocks: Sequence[int] = (3, 4, 23, 3)
  widths: Sequence[int] = (64, 64, 64, 64)
  stem_widths: Sequence[int] = (32, 32, 64)
  expansion: int = 4
  kernel_size: int = 5
  max_pool_first: bool = True  # concat pooling order: (max, average) or (average, max)
  benchmark_head: bool = True  # the PTB-XL benchmark head, else a single Dense layer

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    if len(self.blocks) != len(self.widths):
      raise ValueError(f"XResNet1d: {len(self.blocks)} stage depths but {len(self.widths)} widths")
    for i, width in enumerate(self.stem_widths):
      x = ConvBN(width, self.kernel_size, 2 if i == 0 else 1, dtype=self.dtype)(x, train)
    x = nn.max_pool(x, (3,), strides=(2,), padding=[(1, 1)])
    feature_maps = []
    for stage, (depth, width) in enumerate(zip(self.blocks, self.widths, strict=True)):
      for i in range(depth):
        strides = 2 if stage > 0 and i == 0 else 1
        block = BottleneckBlock(width, self.expansion, self.kernel_size, strides, dtype=self.dtype)
        x = block(x, train)
      feature_maps.append(x)
    features = concat_pool(x, self.max_pool_first)
    if self.benchmark_head:
      logits = BenchmarkHead(self.num_classes, dtype=self.dtype)(features, train)
    else:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(features)
    return BackboneOutput(logits.astype(jnp.float32), features, tuple(feature_maps))


@register("xresnet1d101")
class XResNet1d101(XResNet1d):
  """The benchmark's xresnet1d101: blocks (3, 4, 23, 3); 1,872,261 parameters (5 classes)."""


@register("xresnet1d50")
class XResNet1d50(XResNet1d):
  """The benchmark's xresnet1d50: blocks (3, 4, 6, 3), 953,989 parameters (5 classes, 12 leads)."""

  blocks: Sequence[int] = (3, 4, 6, 3)


@register("xresnet1d101_wide")
class XResNet1d101Wide(XResNet1d):
  """MVKT-ECG's XResNet1d101 (2048 channels, 4096 features): 28,301,509 parameters (5 classes)."""

  widths: Sequence[int] = (64, 128, 256, 512)
  stem_widths: Sequence[int] = (32, 64, 64)
  kernel_size: int = 3
  max_pool_first: bool = False
  benchmark_head: bool = False
