"""PyTorch state_dicts <-> lead_kt Flax variables, for the layouts of ``lead_kt.interop.layouts``.

PyTorch stores Conv1d weights as [out, in, k] (Flax: [k, in, out]) and Linear weights as
[out, in] (Flax: [in, out]); BatchNorm1d's weight, bias, running_mean and running_var are Flax's
scale, bias (params) and mean, var (batch_stats). ``num_batches_tracked`` has no Flax counterpart:
BatchNorm with a momentum never reads it.
"""

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lead_kt import models
from lead_kt.interop.layouts import LAYOUTS, Layer

_CHECKPOINT_KEYS = ("model", "state_dict")  # fastai v1 Learner.save, common training loops
_PARALLEL_PREFIX = "module."  # nn.DataParallel / DistributedDataParallel


class StateDictError(ValueError):
  """A state_dict that does not fit the backbone; the message names the key and the cause."""


def _conv_to_flax(weight: np.ndarray) -> np.ndarray:
  return weight.transpose(2, 1, 0)


def _linear_to_flax(weight: np.ndarray) -> np.ndarray:
  return weight.T


# kind -> (PyTorch name, Flax collection, Flax name, PyTorch -> Flax array transform); the
# transforms are their own inverses.
_TENSORS = {
  "conv": (("weight", "params", "kernel", _conv_to_flax),),
  "linear": (
    ("weight", "params", "kernel", _linear_to_flax),
    ("bias", "params", "bias", None),
  ),
  "batch_norm": (
    ("weight", "params", "scale", None),
    ("bias", "params", "bias", None),
    ("running_mean", "batch_stats", "mean", None),
    ("running_var", "batch_stats", "var", None),
  ),
}
_COUNTER = "num_batches_tracked"


def layout(backbone: str) -> list[Layer]:
  """The layout of ``backbone``; a ValueError names the backbones that have one."""
  if backbone not in LAYOUTS:
    raise ValueError(
      f"no PyTorch layout for backbone {backbone!r}; supported: {', '.join(LAYOUTS)}"
    )
  return LAYOUTS[backbone](models.get(backbone, num_classes=1))


def _entries(layers: list[Layer]) -> Iterator[tuple[str, tuple[str, ...], Any]]:
  """``(torch key, flax path incl. collection, transform)`` per tensor; duplicates of a key (a
  module registered twice) follow it with the same path."""
  for layer in layers:
    for name, collection, flax_name, transform in _TENSORS[layer.kind]:
      for prefix in layer.torch_prefixes:
        yield f"{prefix}.{name}", (collection, *layer.flax_path, flax_name), transform


def _counter_keys(layers: list[Layer]) -> list[str]:
  return [
    f"{prefix}.{_COUNTER}"
    for layer in layers
    if layer.kind == "batch_norm"
    for prefix in layer.torch_prefixes
  ]


@functools.cache  # tracing a deep backbone takes about a second
def _flax_shapes(backbone: str, num_classes: int, num_leads: int) -> dict[tuple[str, ...], tuple]:
  model = models.get(backbone, num_classes)
  # Parameter shapes do not depend on the length; 250 samples fit every backbone.
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 250, num_leads), jnp.float32))
  )
  return {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(variables).items()}


def _check_layout_covers(backbone: str, layers: list[Layer], shapes: dict) -> None:
  """Every Flax variable is mapped once (a failure here is a bug in the layout, not the input)."""
  mapped = [path for _, path, _ in _entries(layers)]
  unmapped = set(shapes) - set(mapped)
  unknown = set(mapped) - set(shapes)
  if unmapped or unknown:
    raise AssertionError(
      f"layout of {backbone} does not match its Flax variables: unmapped {sorted(unmapped)[:3]}, "
      f"unknown {sorted(unknown)[:3]}"
    )


def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The state_dict itself from a checkpoint dict, without a DataParallel ``module.`` prefix."""
  for key in _CHECKPOINT_KEYS:
    if isinstance(state_dict.get(key), Mapping):
      state_dict = state_dict[key]
      break
  if state_dict and all(key.startswith(_PARALLEL_PREFIX) for key in state_dict):
    return {key[len(_PARALLEL_PREFIX) :]: value for key, value in state_dict.items()}
  return dict(state_dict)


def _as_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _fail_on_keys(backbone: str, missing: list[str], unexpected: list[str], expected: dict):
  problems = []
  if missing:
    shown = ", ".join(f"{key!r} (shape {expected[key]})" for key in missing[:5])
    problems.append(f"{len(missing)} missing: {shown}{' ...' if len(missing) > 5 else ''}")
  if unexpected:
    shown = ", ".join(repr(key) for key in unexpected[:5])
    problems.append(
      f"{len(unexpected)} not in the {backbone} layout: {shown}"
      f"{' ...' if len(unexpected) > 5 else ''}"
    )
  raise StateDictError(f"state_dict does not fit {backbone}: " + "; ".join(problems))


def from_torch(
  backbone: str, state_dict: Mapping[str, Any], num_classes: int, num_leads: int
) -> dict[str, Any]:
  """Flax variables ``{"params", "batch_stats"}`` of ``lead_kt.models.get(backbone, num_classes)``
  for ``num_leads`` input leads, from a PyTorch state_dict of the reference layout.

  ``state_dict`` maps keys to torch tensors or arrays; a checkpoint dict holding it under "model"
  or "state_dict" is unwrapped, a "module." prefix on every key is dropped. Raises StateDictError
  naming the key for a missing, unknown or misshapen entry.
  """
  layers = layout(backbone)
  shapes = _flax_shapes(backbone, num_classes, num_leads)
  _check_layout_covers(backbone, layers, shapes)
  given = _unwrap(state_dict)
  expected = {}  # torch key -> torch shape
  for key, path, transform in _entries(layers):
    shape = shapes[path]
    expected[key] = shape[::-1] if transform else shape  # both transforms reverse the axes
  counters = _counter_keys(layers)
  expected.update({key: () for key in counters})
  missing = [key for key in expected if key not in given]
  unexpected = [key for key in given if key not in expected]
  if missing or unexpected:
    _fail_on_keys(backbone, missing, unexpected, expected)

  arrays = {key: _as_numpy(value) for key, value in given.items()}
  for key, shape in expected.items():
    if arrays[key].shape != tuple(shape):
      raise StateDictError(
        f"{key!r} has shape {arrays[key].shape}, expected {tuple(shape)} for {backbone} with "
        f"{num_leads} leads and {num_classes} classes"
      )
  flat, source_of = {}, {}
  for key, path, transform in _entries(layers):
    value = arrays[key].astype(np.float32)
    if path in flat:  # a second name of one module: the reference saved the same tensor twice
      if not np.array_equal(np.asarray(flat[path]), transform(value) if transform else value):
        raise StateDictError(
          f"{key!r} differs from {source_of[path]!r}; the reference registers one module under "
          "both names, so they must be equal"
        )
      continue
    flat[path], source_of[path] = jnp.asarray(transform(value) if transform else value), key
  return flax.traverse_util.unflatten_dict(flat)


def to_torch(backbone: str, variables: Mapping[str, Any], batches_tracked: int = 0) -> dict:
  """The PyTorch state_dict (torch tensors, the reference layout's keys) of Flax ``variables`` of
  ``backbone``; every BatchNorm's ``num_batches_tracked`` is ``batches_tracked``.

  ``to_torch(b, from_torch(b, sd, ...), n)`` gives ``sd`` back exactly when ``sd``'s BatchNorms
  have counted ``n`` batches (each counts one per training step).
  """
  import torch  # only this direction needs PyTorch

  layers = layout(backbone)
  flat = flax.traverse_util.flatten_dict(
    {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  )
  state_dict = {}
  for key, path, transform in _entries(layers):
    if path not in flat:
      raise StateDictError(f"variables of {backbone} lack {'/'.join(path)} (for {key!r})")
    value = np.asarray(flat[path], np.float32)
    # A writable C-ordered copy: torch.from_numpy shares memory and wants both.
    state_dict[key] = torch.from_numpy(
      np.array(transform(value) if transform else value, order="C")
    )
  for key in _counter_keys(layers):
    state_dict[key] = torch.tensor(batches_tracked, dtype=torch.long)
  return state_dict
