"""Multi-scale CNN + transformer encoder ("cnn_transformer"), the feature-reconstruction extractor.

Layout for ``[B, T, leads]`` input with the defaults (D = ``d_model`` = 128, N = ceil(T / 8)):

  branches     4 parallel conv + BN + ReLU branches (kernels 3/7/15/31, 32 channels each,
               no bias, same length), concatenated                                 [B, T, 128]
  tokens       conv(D, kernel 8, stride 8): downsampling and projection in one     [B, N, D]
  positions    + sinusoidal (any N) or learned (N <= ``max_tokens``), dropout      [B, N, D]
  encoder      4 pre-norm blocks (LN-MHA(4 heads)-residual, LN-MLP(256)-residual),
               final LayerNorm                                                     [B, N, D]
  pooling      mean over tokens                                                    [B, D]
  head         Dense(num_classes)

1000 samples give 125 tokens, 250 give 32. ``feature_maps`` is (multi-scale map, token sequence);
the token sequence ``[B, N, D]`` is last, as the feature-reconstruction method expects. That
method's student builds its extractor from this registry entry, so its same-extractor baseline
(configs/feature_recon_baseline.py) trains this very module with BCE alone. Trainable
parameters for 12 leads and 5 classes with the defaults: 683,781 (branches 21,760; token
projection 131,200; encoder 4 x 132,480 + 256; head 645); learned positions add 65,536.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lead_kt.models.layers import ConvBN, conv_general_dilated
from lead_kt.models.registry import BackboneOutput, register


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """Fixed sine/cosine position codes ``[length, dim]`` (sines in even, cosines in odd channels)."""
  if dim % 2:
    raise ValueError(f"sinusoidal positions need an even model width, got {dim}")
  positions = np.arange(length, dtype=np.float32)[:, None]
  frequencies = np.exp(-np.log(10000.0) * np.arange(0, dim, 2, dtype=np.float32) / dim)
  codes = np.zeros((length, dim), np.float32)
  codes[:, 0::2] = np.sin(positions * frequencies)
  codes[:, 1::2] = np.cos(positions * frequencies)
  return codes


class EncoderBlock(nn.Module):
  """Pre-norm transformer block ``[B, N, D] -> [B, N, D]``: x + MHA(LN(x)), then x + MLP(LN(x))."""

  d_model: int
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = lambda: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32)
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)
    dense = lambda features: nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32)
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      qkv_features=self.d_model,
      dropout_rate=self.dropout,
      force_fp32_for_softmax=True,
      dtype=self.dtype,
      param_dtype=jnp.float32,
    )(norm()(x), deterministic=not train)
    x = x + drop(y)
    y = drop(nn.gelu(dense(self.mlp_dim)(norm()(x))))
    return x + drop(dense(self.d_model)(y))


class TransformerEncoder(nn.Module):
  """``num_layers`` pre-norm blocks and a final LayerNorm; ``[B, N, d_model] -> [B, N, d_model]``.

  Dropout (attention weights, residual branches, MLP) draws from the ``dropout`` RNG stream in train
  mode.
  """

  num_layers: int
  d_model: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 3 or x.shape[-1] != self.d_model:
      raise ValueError(
        f"TransformerEncoder expects [batch, tokens, {self.d_model}] input, got shape {x.shape}"
      )
    for _ in range(self.num_layers):
      x = EncoderBlock(self.d_model, self.num_heads, self.mlp_dim, self.dropout, self.dtype)(
        x, train
      )
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32)(x)


@register("cnn_transformer")
class CNNTransformer(nn.Module):
  """Multi-scale conv branches, strided token projection, transformer encoder, mean pooling.

  ``[B, T, leads] -> BackboneOutput`` with ``d_model`` features.
  """

  num_classes: int
  branch_kernels: Sequence[int] = (3, 7, 15, 31)
  branch_features: int = 32
  downsample: int = 8
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.1
  learned_positions: bool = False
  max_tokens: int = 512
  dtype: Any = jnp.float32

  def _positions(self, num_tokens: int) -> jax.Array:
    """``[1, num_tokens, d_model]`` position codes."""
    if not self.learned_positions:
      return jnp.asarray(sinusoidal_positions(num_tokens, self.d_model))[None]
    if num_tokens > self.max_tokens:
      raise ValueError(
        f"cnn_transformer: {num_tokens} tokens exceed the {self.max_tokens} learned positions"
      )
    table = self.param(
      "position_embedding",
      nn.initializers.normal(stddev=0.02),
      (self.max_tokens, self.d_model),
      jnp.float32,
    )
    return table[None, :num_tokens]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
    if any(kernel % 2 == 0 for kernel in self.branch_kernels):
      raise ValueError(
        f"cnn_transformer: branch_kernels must be odd to keep the length, got {self.branch_kernels}"
      )
    x = x.astype(self.dtype)
    # BN is per channel, so normalising each branch equals normalising the concatenation.
    multi_scale = jnp.concatenate(
      [
        ConvBN(self.branch_features, kernel, dtype=self.dtype)(x, train)
        for kernel in self.branch_kernels
      ],
      axis=-1,
    )
    tokens = nn.Conv(
      self.d_model,
      (self.downsample,),
      strides=(self.downsample,),
      padding="SAME",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      conv_general_dilated=conv_general_dilated,
    )(multi_scale)
    tokens = tokens + self._positions(tokens.shape[1]).astype(self.dtype)
    tokens = nn.Dropout(self.dropout, deterministic=not train)(tokens)
    tokens = TransformerEncoder(
      self.num_layers, self.d_model, self.num_heads, self.mlp_dim, self.dropout, self.dtype
    )(tokens, train)
    features = jnp.mean(tokens, axis=1)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(features)
    return BackboneOutput(logits.astype(jnp.float32), features, (multi_scale, tokens))
