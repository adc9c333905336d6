"""The contract between the one trainer and the methods (teacher, baseline, mvkt, kd, ...).

A batch is a dict of global arrays sharded over the mesh's data axis:
  ``teacher``  float [B, T, 12]   all twelve leads, normalised (I, II, III, aVR, aVL, aVF, V1..V6)
  ``student``  float [B, T, L]    the configured lead subset of the same crop
  ``label``    float [B, C]       multi-hot
  ``index``    int32 [B]          dense record index within the split (memory banks use it)
  ``mask``     float [B]          1 for real examples, 0 for padding (evaluation's last batch)

A method keeps two pytrees: ``params`` (what the optimiser updates) and ``state`` (everything
else it carries: batch statistics, a frozen teacher, memory banks, normalisation constants).
All three functions are pure and run inside ``jax.jit``.

Optional hooks, called by the trainer when a method has them (besides ``state_shardings``,
``summarize``, ``selection_metric``, ``write_figures``; see docs/architecture.md):
  ``prepare(params, state, run: RunStart) -> state``  once, when a run starts from its initial
      state, after the teacher's variables are in place (not on resume: what it returns is
      checkpointed). For what needs the data or the run's length, e.g. statistics of the train
      split or a schedule counted in steps.
  ``evaluation_outputs(params, state, batch) -> dict``  what validation and test evaluation
      compute in place of ``predict`` (its outputs plus per-window extras such as agreement with
      the teacher), so that ``predict``, which inference and export trace, stays the network.
  ``diagnostics(params, state, batches) -> dict``  once, with the best variables after the test
      evaluation; the dict goes into results.json under ``diagnostics``. ``batches`` is
      ``RunStart.batches``.
"""

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import jax

Batch = dict[str, jax.Array]
PyTree = Any


class RunStart(NamedTuple):
  """What ``prepare`` is told about the run.

  steps_per_epoch: training steps per epoch.
  batches: split name -> the split's evaluation batches (every window of every record once, as
    evaluation reads them: the keys above plus ``record``; ``mask`` is 0 for padding rows).
  """

  steps_per_epoch: int
  batches: Callable[[str], Iterator[Batch]]


class Method(Protocol):
  name: str

  def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
    """Returns ``(params, state)`` for a first batch (only its shapes matter)."""

  def loss(
    self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array
  ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """Returns ``(scalar loss, (new_state, metrics))``; metrics are scalars (loss terms)."""

  def predict(self, params: PyTree, state: PyTree, batch: Batch) -> dict[str, jax.Array]:
    """Per-example outputs in eval mode; ``logits`` [B, C] at least for classifiers."""
