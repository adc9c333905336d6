"""Backbone registry: configs select networks by name.

Every backbone is a flax.linen Module constructed as ``cls(num_classes=C, **kwargs)`` whose
``__call__(x, train=False)`` takes ``[batch, time, leads]`` and returns a ``BackboneOutput``.
"""

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class BackboneOutput(NamedTuple):
  """What every backbone returns.

  logits: ``[batch, num_classes]``.
  features: pooled features ``[batch, D]`` (what the classifier head reads).
  feature_maps: intermediate maps ``[batch, time_i, channels_i]``, shallow to deep, for FitNet /
    attention transfer and for token-level consumers (the last entry is the deepest map).
  """

  logits: jax.Array
  features: jax.Array
  feature_maps: tuple[jax.Array, ...]


def register(name: str):
  """Class decorator adding a backbone to the registry under ``name``."""

  def wrap(cls):
    if name in _REGISTRY:
      raise ValueError(f"backbone {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls

  return wrap


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds the backbone ``name`` with ``num_classes`` outputs; ``kwargs`` go to its constructor."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(names())}")
  return _REGISTRY[name](num_classes=num_classes, **kwargs)
