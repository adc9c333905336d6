"""ResNet-34 in one dimension ("resnet1d34").

Layout for ``[B, T, leads]`` input (convolutions without bias, each followed by BatchNorm;
PyTorch padding (k - 1) // 2):

  stem     conv(64, kernel 7, stride 2) + BN + ReLU, max-pool(3, stride 2)   [B, T/4, 64]
  stage 1  3 BasicBlocks, 64 channels                                          [B, T/4, 64]
  stage 2  4 BasicBlocks, 128 channels, first with stride 2                    [B, T/8, 128]
  stage 3  6 BasicBlocks, 256 channels, first with stride 2                    [B, T/16, 256]
  stage 4  3 BasicBlocks, 512 channels, first with stride 2                    [B, T/32, 512]
  pool     global average over time                                            [B, 512]
  head     Dense(num_classes)

(T/k means ceil(T / k).) A BasicBlock is conv3-BN-ReLU-conv3-BN plus shortcut, then ReLU; the
shortcut is a conv1x1 + BN projection where stride or width changes. ``feature_maps`` holds the four
stage outputs. Trainable parameters for 12 leads and 5 classes: 7,225,733 (stem 5,504; stages
74,496 + 379,136 + 2,300,416 + 4,463,616; head 2,565).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import ConvBN, materialize
from lead_kt.models.registry import BackboneOutput, register


class BasicBlock(nn.Module):
  """``[B, T, C_in] -> [B, ceil(T / stride), features]``."""

  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    shortcut = x
    if self.stride > 1 or x.shape[-1] != self.features:
      shortcut = ConvBN(self.features, 1, self.stride, relu=False, dtype=self.dtype)(x, train)
    y = ConvBN(self.features, 3, self.stride, dtype=self.dtype)(x, train)
    # A zero-initialised last BN scale makes each block start as its shortcut (eases deep stacks).
    y = ConvBN(self.features, 3, relu=False, zero_scale=True, dtype=self.dtype)(y, train)
    return materialize(nn.relu(y + shortcut), x)


@register("resnet1d34")
class ResNet1d(nn.Module):
  """1-D ResNet with BasicBlocks; defaults give ResNet-34. ``[B, T, leads] -> BackboneOutput``."""

  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  stage_features: Sequence[int] = (64, 128, 256, 512)
  stem_kernel: int = 7
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    x = ConvBN(self.stage_features[0], self.stem_kernel, 2, dtype=self.dtype)(
      x.astype(self.dtype), train
    )
    x = nn.max_pool(x, (3,), (2,), padding=((1, 1),))
    feature_maps = []
    for stage, (num_blocks, features) in enumerate(
      zip(self.stage_sizes, self.stage_features, strict=True)
    ):
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(features, stride, dtype=self.dtype)(x, train)
      feature_maps.append(x)
    features = jnp.mean(x, axis=1)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(features)
    return BackboneOutput(logits.astype(jnp.float32), features, tuple(feature_maps))
