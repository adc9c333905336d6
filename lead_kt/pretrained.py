"""A run's network started from another run's weights, and the linear probe.

``<net>.init_from = DIR`` (``config.student`` for the network a run trains; ``config.teacher`` for
the teacher run a transfer method trains first): DIR is a finished teacher or baseline run, such
as ``lead_kt.convert`` writes of a PyTorch checkpoint. Its best parameters and batch statistics
become the network's initial variables; when its class count differs, the head (the top-level
modules whose shapes depend on the class count) starts as a new network's does. ``<net>.freeze_
backbone = True`` trains only that head (a linear probe of the pretrained features). The pure
parts live here; ``lead_kt.train`` reads the files and places the result in the train state.
"""

import json
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from lead_kt import checkpoint, methods
from lead_kt.methods.common import Network

# Where a method keeps the network it trains: supervised methods' params and state are that
# network; kd and mvkt keep it under "student" (beside their heads, the teacher and the memory).
NETWORK_KEYS = {"teacher": None, "baseline": None, "kd": "student", "mvkt": "student"}
# Runs whose best/ holds one plain network, as the init source must.
SOURCE_METHODS = ("teacher", "baseline")


class InitError(ValueError):
  """An init source that does not fit the run; the message names the run and the difference."""


def check_method(config: ml_collections.ConfigDict) -> None:
  """Rejects init_from / freeze_backbone for a method whose network has no known place."""
  if (config.student.init_from or config.student.freeze_backbone) and (
    config.method not in NETWORK_KEYS
  ):
    raise InitError(
      f"student.init_from / freeze_backbone work for {', '.join(NETWORK_KEYS)}, not "
      f"{config.method!r}"
    )
  if config.teacher.checkpoint and config.teacher.init_from:
    raise InitError(
      "teacher.checkpoint (a finished teacher, used as it is) and teacher.init_from (where the "
      "teacher run starts) exclude each other"
    )


def network_variables(method: str, params, state) -> dict:
  """``{"params", "batch_stats"}`` of the network that ``method`` trains."""
  key = NETWORK_KEYS[method]
  net_params, stats = (params, state) if key is None else (params[key], state[key])
  return {"params": net_params, "batch_stats": stats["batch_stats"]}


def with_network_variables(method: str, params, state, variables: dict) -> tuple[Any, Any]:
  """``(params, state)`` with ``variables`` in place of the trained network's."""
  key = NETWORK_KEYS[method]
  stats = {"batch_stats": variables["batch_stats"]}
  if key is None:
    return variables["params"], stats
  return {**params, key: variables["params"]}, {**state, key: stats}


def abstract_variables(module, input_shape: tuple[int, ...]) -> dict:
  """Shapes of ``{"params", "batch_stats"}`` of ``module`` on inputs of ``input_shape``."""
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  params, stats = jax.eval_shape(lambda x: Network(module).init(jax.random.key(0), x), x)
  return {"params": params, "batch_stats": stats["batch_stats"]}


def head_modules(build: Callable[[int], Any], num_classes: int, input_shape) -> frozenset[str]:
  """The top-level modules of ``build(num_classes)`` whose parameter shapes depend on the class
  count: the classification head (net1d's ``dense``; the PTB-XL benchmark networks' whole
  ``BenchmarkHead_0``; the last ``Dense`` of the others). Found from the shapes alone."""

  def shapes(classes: int) -> dict:
    params = abstract_variables(build(classes), tuple(input_shape))["params"]
    return {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(params).items()}

  given, more = shapes(num_classes), shapes(num_classes + 1)
  return frozenset(path[0] for path, shape in given.items() if more[path] != shape)


def replace_except(initial: dict, loaded: dict, kept: frozenset[str]) -> dict:
  """``loaded`` with the top-level modules ``kept`` (of both collections) taken from
  ``initial``: a new head on pretrained weights."""
  return {
    collection: {
      name: initial[collection][name] if name in kept else module
      for name, module in loaded[collection].items()
    }
    for collection in ("params", "batch_stats")
  }


def frozen_mask(method: str, head: frozenset[str]) -> Callable[[Any], Any]:
  """``params -> pytree of bools`` for ``optim.create(..., frozen=...)``: True for the trained
  network's parameters outside ``head``; a method's own heads (MVKT's embeddings) still train."""
  key = NETWORK_KEYS[method]

  def network_mask(net_params):
    return {
      name: jax.tree.map(lambda _, frozen=name not in head: frozen, module)
      for name, module in net_params.items()
    }

  def mask(params):
    if key is None:
      return network_mask(params)
    return {
      name: network_mask(value) if name == key else jax.tree.map(lambda _: False, value)
      for name, value in params.items()
    }

  return mask


def _json(value) -> Any:
  """A config value as JSON would store it (tuples become lists), for comparisons."""
  value = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
  return json.loads(json.dumps(value))


def source_run(source: epath.Path) -> tuple[dict, dict]:
  """``(run_identity.json, results.json)`` of the finished run ``source``."""
  identity, results = source / "run_identity.json", source / "results.json"
  if not identity.exists() or not results.exists():
    raise InitError(f"init_from {source} is not a finished lead_kt run (no results.json)")
  return json.loads(identity.read_text()), json.loads(results.read_text())


def check_source(
  source: epath.Path, net: ml_collections.ConfigDict, num_leads: int
) -> tuple[dict, int]:
  """The stored config of the init source ``source`` and its class count, after checking that
  it holds one network of ``net``'s backbone and options reading ``num_leads`` leads."""
  identity, results = source_run(source)
  stored = results["config"]
  problems = []
  if identity["method"] not in SOURCE_METHODS:
    problems.append(f"it is a {identity['method']} run, not one of {', '.join(SOURCE_METHODS)}")
  if identity["student.backbone"] != net.backbone:
    problems.append(f"its backbone is {identity['student.backbone']}, not {net.backbone}")
  if _json(stored["student"]["kwargs"]) != _json(net.kwargs):
    problems.append(f"its backbone options are {stored['student']['kwargs']}, not {net.kwargs}")
  if len(results["student_leads"]) != num_leads:
    problems.append(f"it reads {len(results['student_leads'])} leads, this network {num_leads}")
  if problems:
    raise InitError(f"init_from {source} does not fit this run: {'; '.join(problems)}")
  return stored, identity["num_classes"]


def recorded_contract(config: ml_collections.ConfigDict) -> str:
  """The ``data.preprocessing`` contract recorded by the runs this run starts from (the init
  sources, a given teacher checkpoint): "" when none records one. The networks of a transfer run
  read views of one record, so one contract serves them all; differing ones are an error."""
  sources = [config.student.init_from]
  if config.method in methods.TRANSFER_METHODS:
    sources += [config.teacher.init_from, config.teacher.checkpoint]
  contracts = {}
  for source in filter(None, sources):
    path = checkpoint.absolute_path(source)
    if (path / "results.json").exists():
      data = json.loads((path / "results.json").read_text())["config"]["data"]
      contracts[source] = data.get("preprocessing", "")
  named = {contract for contract in contracts.values() if contract}
  own = config.data.get("preprocessing", "")
  if len(named) > 1 or (own and named and own not in named):
    raise InitError(
      f"the runs this run starts from record the contracts {contracts} and it sets "
      f"data.preprocessing={own!r}: they must agree"
    )
  return named.pop() if named else own


def with_recorded_contract(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with the contract of the runs it starts from (and ``data.normalization =
  "none``, which every contract needs): weights trained on a contract's records get it."""
  contract = recorded_contract(config)
  if contract == config.data.get("preprocessing", ""):
    return config
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.preprocessing = contract
    config.data.normalization = "none"
  return config
