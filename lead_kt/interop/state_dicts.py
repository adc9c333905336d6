"""PyTorch state_dicts <-> lead_kt Flax variables, for the layouts of ``lead_kt.interop.layouts``.

PyTorch stores Conv1d weights as [out, in, k] (Flax: [k, in, out]) and Linear weights as
[out, in] (Flax: [in, out]); BatchNorm1d's weight, bias, running_mean and running_var are Flax's
scale, bias (params) and mean, var (batch_stats). ``num_batches_tracked`` has no Flax counterpart:
BatchNorm with a momentum never reads it. A BatchNorm1d that the reference builds but never calls
(ECGFounder's Net1D without BN) has none either: its tensors are checked for shape and dropped, and
``to_torch`` writes PyTorch's initial values, which such a module keeps.
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
from lead_kt.models.layers import torch_default_bias_init, torch_default_kernel_init

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
  "conv_bias": (
    ("weight", "params", "kernel", _conv_to_flax),
    ("bias", "params", "bias", None),
  ),
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
  "unused_batch_norm": (),
}
_COUNTER = "num_batches_tracked"
_UNUSED_BATCH_NORM = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


def layout(backbone: str, model_kwargs: Mapping[str, Any] | None = None) -> list[Layer]:
  """The layout of ``backbone`` built with ``model_kwargs`` (e.g. a narrower net1d); a ValueError
  names the backbones that have one."""
  if backbone not in LAYOUTS:
    raise ValueError(
      f"no PyTorch layout for backbone {backbone!r}; supported: {', '.join(LAYOUTS)}"
    )
  return LAYOUTS[backbone](models.get(backbone, num_classes=1, **dict(model_kwargs or {})))


def _entries(layers: list[Layer]) -> Iterator[tuple[str, tuple[str, ...], Any]]:
  """``(torch key, flax path incl. collection, transform)`` per tensor; duplicates of a key (a
  module registered twice) follow it with the same path."""
  for layer in layers:
    for name, collection, flax_name, transform in _TENSORS[layer.kind]:
      for prefix in layer.torch_prefixes:
        yield f"{prefix}.{name}", (collection, *layer.flax_path, flax_name), transform


def _counter_keys(layers: list[Layer], kind: str = "batch_norm") -> list[str]:
  return [
    f"{prefix}.{_COUNTER}"
    for layer in layers
    if layer.kind == kind
    for prefix in layer.torch_prefixes
  ]


def _unused_entries(layers: list[Layer]) -> Iterator[tuple[str, int, float]]:
  """``(torch key, channels, PyTorch's initial value)`` per tensor of an unused BatchNorm1d."""
  for layer in layers:
    if layer.kind == "unused_batch_norm":
      for name, initial in _UNUSED_BATCH_NORM.items():
        for prefix in layer.torch_prefixes:
          yield f"{prefix}.{name}", layer.width, initial


def _head_keys(layers: list[Layer]) -> set[str]:
  return {key for layer in layers if layer.head for key, _, _ in _entries([layer])}


def _new_head(layers: list[Layer], shapes: dict, rng: jax.Array) -> dict[tuple[str, ...], Any]:
  """Flax variables of the head layers (Linear), drawn from ``rng`` as PyTorch's nn.Linear
  initialises: weight and bias uniform in +-1/sqrt(in_features)."""
  flat = {}
  for index, layer in enumerate(layer for layer in layers if layer.head):
    kernel_key, bias_key = jax.random.split(jax.random.fold_in(rng, index))
    kernel_shape = shapes[("params", *layer.flax_path, "kernel")]
    flat[("params", *layer.flax_path, "kernel")] = torch_default_kernel_init(
      kernel_key, kernel_shape
    )
    flat[("params", *layer.flax_path, "bias")] = torch_default_bias_init(kernel_shape[0])(
      bias_key, kernel_shape[-1:]
    )
  return flat


def _hashable(model_kwargs: Mapping[str, Any] | None) -> tuple:
  """``model_kwargs`` as a cache key (sequences as tuples)."""
  items = sorted((model_kwargs or {}).items())
  return tuple((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in items)


@functools.cache  # tracing a deep backbone takes about a second
def _flax_shapes(
  backbone: str, num_classes: int, num_leads: int, model_kwargs: tuple = ()
) -> dict[tuple[str, ...], tuple]:
  model = models.get(backbone, num_classes, **dict(model_kwargs))
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
  backbone: str,
  state_dict: Mapping[str, Any],
  num_classes: int,
  num_leads: int,
  head_rng: jax.Array | int | None = None,
  model_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Flax variables ``{"params", "batch_stats"}`` of ``lead_kt.models.get(backbone, num_classes,
  **model_kwargs)`` for ``num_leads`` input leads, from a PyTorch state_dict of the reference
  layout (of the network built with the same options, e.g. a narrower net1d).

  ``state_dict`` maps keys to torch tensors or arrays; a checkpoint dict holding it under "model"
  or "state_dict" is unwrapped, a "module." prefix on every key is dropped. Raises StateDictError
  naming the key for a missing, unknown or misshapen entry.

  ``head_rng`` (a JAX key or an int seed): where the layout has a replaceable head (net1d's
  ``dense``) and the state_dict's head has another number of classes than ``num_classes`` (a
  released model fine-tuned on new labels), everything else is loaded and the head starts anew
  from this key, as PyTorch's nn.Linear starts (weight and bias uniform in +-1/sqrt(in_features)),
  which is what ECGFounder's fine-tuning code does. Without it such a head is a shape error.
  """
  layers = layout(backbone, model_kwargs)
  shapes = _flax_shapes(backbone, num_classes, num_leads, _hashable(model_kwargs))
  _check_layout_covers(backbone, layers, shapes)
  given = _unwrap(state_dict)
  expected = {}  # torch key -> torch shape
  for key, path, transform in _entries(layers):
    shape = shapes[path]
    expected[key] = shape[::-1] if transform else shape  # both transforms reverse the axes
  expected.update({key: (width,) for key, width, _ in _unused_entries(layers)})
  counters = _counter_keys(layers) + _counter_keys(layers, "unused_batch_norm")
  expected.update({key: () for key in counters})
  missing = [key for key in expected if key not in given]
  unexpected = [key for key in given if key not in expected]
  if missing or unexpected:
    _fail_on_keys(backbone, missing, unexpected, expected)

  arrays = {key: _as_numpy(value) for key, value in given.items()}
  head_keys, new_head = _head_keys(layers), False
  for key, shape in expected.items():
    found = arrays[key].shape
    if found == tuple(shape):
      continue
    # The class count is PyTorch's first axis of a Linear weight and bias.
    if key in head_keys and found[1:] == tuple(shape[1:]):
      if head_rng is not None:
        new_head = True
        continue
      hint = f"; pass head_rng to start a new head for {num_classes} classes"
    else:
      hint = ""
    raise StateDictError(
      f"{key!r} has shape {found}, expected {tuple(shape)} for {backbone} with "
      f"{num_leads} leads and {num_classes} classes{hint}"
    )
  flat, source_of = {}, {}
  if new_head:
    rng = jax.random.key(head_rng) if isinstance(head_rng, int | np.integer) else head_rng
    flat = _new_head(layers, shapes, rng)
  for key, path, transform in _entries(layers):
    if new_head and key in head_keys:
      continue
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


def to_torch(
  backbone: str,
  variables: Mapping[str, Any],
  batches_tracked: int = 0,
  model_kwargs: Mapping[str, Any] | None = None,
) -> dict:
  """The PyTorch state_dict (torch tensors, the reference layout's keys) of Flax ``variables`` of
  ``backbone`` (built with ``model_kwargs``); every BatchNorm's ``num_batches_tracked`` is
  ``batches_tracked`` (0 for one the reference never calls, which also keeps its initial values).

  ``to_torch(b, from_torch(b, sd, ...), n)`` gives ``sd`` back exactly when ``sd``'s BatchNorms
  have counted ``n`` batches (each counts one per training step).
  """
  import torch  # only this direction needs PyTorch

  layers = layout(backbone, model_kwargs)
  flat = flax.traverse_util.flatten_dict(
    {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
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
  for key, width, initial in _unused_entries(layers):
    state_dict[key] = torch.full((width,), initial)
  for key in _counter_keys(layers, "unused_batch_norm"):
    state_dict[key] = torch.tensor(0, dtype=torch.long)
  return state_dict
