"""The feature-reconstruction student: extractor, reconstruction of teacher features, fusion.

For a single-lead input ``[B, T, L]`` (N tokens of width D_s from the extractor, D_t the width of
the teacher features reconstructed: the channels of the teacher's deepest feature map for token
targets, its pooled feature width for pooled targets; see lead_kt/methods/feature_recon.py):

  extractor      any registered backbone (``cnn_transformer`` by default, the same code as the
                 ``cnn_transformer`` baseline); its deepest feature map is the token sequence
                                                                                    [B, N, D_s]
                 and its pooled features, the student's own                         [B, D_s]
  reconstructor  Dense(d_model), transformer encoder, Dense(D_t): reconstructed teacher tokens
                                                                                    [B, N, D_t]
                 and their mean, the reconstructed pooled teacher feature           [B, D_t]
  fusion         cross_attention: queries = the extractor's tokens, keys/values = the
                 reconstructed tokens; residual + LayerNorm, feed-forward + residual + LayerNorm,
                 mean over the query tokens                                         [B, D_s]
                 none: the reconstructed pooled feature alone                       [B, D_t]
  classifier     Dense(num_classes)                                                 [B, C]

The module does not know the targets: the method compares the reconstructed tokens (or their
mean) with them. The reconstructed tokens serve as the fusion's keys and values. The extractor's own
classification head is built but unused.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.cnn_transformer import TransformerEncoder

FUSIONS = ("cross_attention", "none")


class FeatureReconOutput(NamedTuple):
  """What ``FeatureReconStudent`` returns.

  logits: ``[B, C]`` (float32).
  reconstructed: the reconstructed pooled teacher feature ``[B, D_t]`` (float32).
  reconstructed_tokens: ``[B, N, D_t]``, the fusion's keys and values.
  features: what the classifier reads, ``[B, D_s]`` (fused) or ``[B, D_t]`` (no fusion).
  own_features: the extractor's pooled features ``[B, D_s]`` (float32), what a classifier of the
    extractor alone reads (the linear probe's reference).
  """

  logits: jax.Array
  reconstructed: jax.Array
  reconstructed_tokens: jax.Array
  features: jax.Array
  own_features: jax.Array


def _dense(features: int, dtype, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


class FeatureReconstructor(nn.Module):
  """Student tokens ``[B, N, D_s]`` -> reconstructed teacher tokens ``[B, N, teacher_dim]``."""

  teacher_dim: int
  d_model: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    x = _dense(self.d_model, self.dtype, "input_projection")(tokens)
    x = TransformerEncoder(
      self.num_layers, self.d_model, self.num_heads, self.mlp_dim, self.dropout, self.dtype
    )(x, train)
    return _dense(self.teacher_dim, self.dtype, "to_teacher")(x)


class CrossAttentionFusion(nn.Module):
  """Queries ``[B, N_q, D_q]`` attend to a context ``[B, N_k, D_k]``; returns ``[B, N_q, D_q]``.

  Post-norm transformer decoder block without self-attention: ``x = LN(q + MHA(q, kv, kv))``,
  then ``LN(x + MLP(x))``. The output has the queries' tokens and width; the keys and values only
  decide what is mixed in.
  """

  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries: jax.Array, context: jax.Array, train: bool = False) -> jax.Array:
    width = queries.shape[-1]
    if width % self.num_heads:
      raise ValueError(
        f"CrossAttentionFusion: query width {width} is not divisible by {self.num_heads} heads"
      )
    norm = lambda name: nn.LayerNorm(
      epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name=name
    )
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)
    attended = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      qkv_features=width,
      out_features=width,
      dropout_rate=self.dropout,
      force_fp32_for_softmax=True,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="attention",
    )(queries, inputs_k=context, deterministic=not train)  # values = keys = context
    x = norm("attention_norm")(queries + drop(attended))
    y = _dense(width, self.dtype, "mlp_output")(drop(nn.gelu(_dense(self.mlp_dim, self.dtype)(x))))
    return norm("mlp_norm")(x + drop(y))


class FeatureReconStudent(nn.Module):
  """Single-lead ``[B, T, L]`` -> ``FeatureReconOutput`` (see the module docstring)."""

  extractor: nn.Module
  num_classes: int
  teacher_dim: int
  recon_d_model: int = 128
  recon_layers: int = 2
  recon_heads: int = 4
  recon_mlp_dim: int = 256
  recon_dropout: float = 0.1
  fusion: str = "cross_attention"
  fusion_heads: int = 4
  fusion_mlp_dim: int = 256
  fusion_dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> FeatureReconOutput:
    if self.fusion not in FUSIONS:
      raise ValueError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSIONS)}")
    extracted = self.extractor(x, train)
    tokens = extracted.feature_maps[-1]
    if tokens.ndim != 3:
      raise ValueError(
        f"feature_recon: the extractor's last feature map must be [batch, tokens, channels], "
        f"got shape {tokens.shape}"
      )
    reconstructed_tokens = FeatureReconstructor(
      self.teacher_dim,
      self.recon_d_model,
      self.recon_layers,
      self.recon_heads,
      self.recon_mlp_dim,
      self.recon_dropout,
      self.dtype,
      name="reconstructor",
    )(tokens, train)
    reconstructed = jnp.mean(reconstructed_tokens.astype(jnp.float32), axis=1)
    if self.fusion == "cross_attention":
      fused = CrossAttentionFusion(
        self.fusion_heads, self.fusion_mlp_dim, self.fusion_dropout, self.dtype, name="fusion"
      )(tokens, reconstructed_tokens, train)
      features = jnp.mean(fused, axis=1)
    else:
      features = reconstructed.astype(self.dtype)
    logits = _dense(self.num_classes, self.dtype, "classifier")(features)
    return FeatureReconOutput(
      logits.astype(jnp.float32),
      reconstructed,
      reconstructed_tokens,
      features,
      extracted.features.astype(jnp.float32),
    )
