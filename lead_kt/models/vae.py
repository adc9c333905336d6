"""A 1-D convolutional VAE reconstructing all 12 leads from a masked 12-lead input (WearECG-style).

Shapes for an input ``[B, T, 12]`` (the kept leads in their places, the others zeroed), widths
``channels = (c0, c1, c2)`` (default 128, 256, 512) and ``latent_channels`` z (default 4):

  encoder  conv c0 at T; per level i: ``num_res_blocks`` residual blocks of width c_i, then a
           stride-2 conv (T -> T/2 -> T/4 -> T/8); at the bottom a residual block, one
           self-attention block and a residual block of width c2; GroupNorm, SiLU, conv to 2z:
           mean and log-variance                                                 [B, T/8, z] each
  sample   z = mean + exp(log_var / 2) * eps in train mode (eps from the ``sample`` RNG stream), the
           mean in eval mode
  decoder  the mirror image: conv c2 at T/8; residual, self-attention, residual; per level i = 2, 1,
           0: nearest-neighbour upsampling x2 and a conv, then ``num_res_blocks`` residual blocks of
           width c_i; GroupNorm, SiLU, conv to ``out_leads``                       [B, T, 12]

Residual blocks are GroupNorm-SiLU-conv twice with a 1x1 projection on the skip path when the width
changes. T must be divisible by 2**len(channels) (8): the module raises a ValueError otherwise; the
signal_recon method zero-pads crops at the end and drops the padded samples of the output.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lead_kt.models.layers import conv_general_dilated

# As in Stable Diffusion's VAE: keeps exp(log_var) finite early in training.
LOG_VAR_RANGE = (-30.0, 20.0)


class VAEOutput(NamedTuple):
  """reconstruction [B, T, out_leads] (float32), mean and log_var [B, T/8, latent_channels]."""

  reconstruction: jax.Array
  mean: jax.Array
  log_var: jax.Array


def kl_divergence(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, 1)) summed over all but the batch axis: [B, ...] -> [B].

  Per element 0.5 * (mean^2 + exp(log_var) - 1 - log_var).
  """
  mean, log_var = mean.astype(jnp.float32), log_var.astype(jnp.float32)
  per_element = 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)
  return per_element.reshape(per_element.shape[0], -1).sum(axis=-1)


class _Blocks(nn.Module):
  """Shared construction helpers (GroupNorm, convs) of the encoder and the decoder."""

  num_groups: int
  dtype: Any

  def norm(self, channels: int) -> nn.GroupNorm:
    if channels % self.num_groups:
      raise ValueError(f"VAE: num_groups={self.num_groups} does not divide width {channels}")
    return nn.GroupNorm(self.num_groups, dtype=self.dtype, param_dtype=jnp.float32)

  def conv(self, features: int, kernel_size: int = 3, strides: int = 1) -> nn.Conv:
    return nn.Conv(
      features,
      (kernel_size,),
      (strides,),
      padding="SAME",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      conv_general_dilated=conv_general_dilated,
    )


class ResBlock(_Blocks):
  """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), skip projected to ``features`` when widths differ."""

  features: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.features)(nn.silu(self.norm(x.shape[-1])(x)))
    y = self.conv(self.features)(nn.silu(self.norm(self.features)(y)))
    if x.shape[-1] != self.features:
      x = self.conv(self.features, kernel_size=1)(x)
    return x + y


class AttentionBlock(_Blocks):
  """x + single-head self-attention over time of GN(x): ``[B, N, D] -> [B, N, D]``."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.MultiHeadDotProductAttention(
      num_heads=1, force_fp32_for_softmax=True, dtype=self.dtype, param_dtype=jnp.float32
    )(self.norm(x.shape[-1])(x))
    return x + y


class _Bottom(_Blocks):
  """Residual, self-attention, residual at the lowest resolution."""

  features: int = 512

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    blocks = dict(num_groups=self.num_groups, dtype=self.dtype)
    x = ResBlock(features=self.features, **blocks)(x)
    x = AttentionBlock(**blocks)(x)
    return ResBlock(features=self.features, **blocks)(x)


class Encoder(_Blocks):
  """``[B, T, L] -> (mean, log_var)`` each ``[B, T / 2**len(channels), latent_channels]``."""

  channels: Sequence[int] = (128, 256, 512)
  num_res_blocks: int = 2
  latent_channels: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    blocks = dict(num_groups=self.num_groups, dtype=self.dtype)
    x = self.conv(self.channels[0])(x)
    for width in self.channels:
      for _ in range(self.num_res_blocks):
        x = ResBlock(features=width, **blocks)(x)
      x = self.conv(width, strides=2)(x)
    x = _Bottom(features=self.channels[-1], **blocks)(x)
    moments = self.conv(2 * self.latent_channels)(nn.silu(self.norm(x.shape[-1])(x)))
    mean, log_var = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(log_var, *LOG_VAR_RANGE)


class Decoder(_Blocks):
  """``[B, T / 2**len(channels), latent_channels] -> [B, T, out_leads]`` (float32)."""

  channels: Sequence[int] = (128, 256, 512)
  num_res_blocks: int = 2
  out_leads: int = 12

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    blocks = dict(num_groups=self.num_groups, dtype=self.dtype)
    x = self.conv(self.channels[-1])(z)
    x = _Bottom(features=self.channels[-1], **blocks)(x)
    for width in reversed(self.channels):
      x = jnp.repeat(x, 2, axis=1)
      x = self.conv(x.shape[-1])(x)
      for _ in range(self.num_res_blocks):
        x = ResBlock(features=width, **blocks)(x)
    x = self.conv(self.out_leads)(nn.silu(self.norm(x.shape[-1])(x)))
    return x.astype(jnp.float32)


class SignalVAE(nn.Module):
  """The encoder, the reparameterised sample and the decoder (module docstring)."""

  channels: Sequence[int] = (128, 256, 512)
  num_res_blocks: int = 2
  latent_channels: int = 4
  num_groups: int = 32
  out_leads: int = 12
  dtype: Any = jnp.float32

  @property
  def length_multiple(self) -> int:
    return 2 ** len(self.channels)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> VAEOutput:
    """x [B, T, L] with T divisible by ``length_multiple``; ``train`` samples the latent."""
    if x.ndim != 3 or x.shape[1] % self.length_multiple:
      raise ValueError(
        f"SignalVAE expects [batch, time, leads] with time divisible by {self.length_multiple} "
        f"({len(self.channels)} stride-2 downsamplings), got shape {x.shape}; pad the input"
      )
    shared = dict(num_groups=self.num_groups, dtype=self.dtype)
    mean, log_var = Encoder(
      channels=self.channels,
      num_res_blocks=self.num_res_blocks,
      latent_channels=self.latent_channels,
      **shared,
    )(x.astype(self.dtype))
    z = mean
    if train:
      noise = jax.random.normal(self.make_rng("sample"), mean.shape, jnp.float32)
      z = mean + jnp.exp(0.5 * log_var) * noise
    reconstruction = Decoder(
      channels=self.channels,
      num_res_blocks=self.num_res_blocks,
      out_leads=self.out_leads,
      **shared,
    )(z.astype(self.dtype))
    return VAEOutput(reconstruction, mean, log_var)
