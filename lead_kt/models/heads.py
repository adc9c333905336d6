"""Small trainable heads the knowledge-transfer methods put on top of backbone outputs."""

import flax.linen as nn
import jax

from lead_kt.losses import l2_normalize, resize_time


class EmbedHead(nn.Module):
  """Projection to the contrastive embedding space: ``[B, F]`` features -> ``[B, dim]`` unit rows.

  ``hidden = 0``: Dense(dim) -> L2 norm (the MVKT code's ``Embed``). ``hidden > 0``: Dense(hidden)
  -> ReLU -> Dense(dim) -> L2 norm (the two-layer MLP of the MVKT paper).
  """

  dim: int = 128
  hidden: int = 0

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = features
    if self.hidden > 0:
      x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return l2_normalize(nn.Dense(self.dim, name="output")(x))


class HintRegressor(nn.Module):
  """FitNets regressor: a 1x1 convolution to the teacher's ``channels``, then linear
  interpolation of the time axis to the teacher's length.

  ``[B, T_s, C_s]`` student map -> ``[B, length, channels]``.
  """

  channels: int

  @nn.compact
  def __call__(self, student_map: jax.Array, length: int) -> jax.Array:
    projected = nn.Conv(self.channels, kernel_size=(1,), name="conv1x1")(student_map)
    return resize_time(projected, length)
