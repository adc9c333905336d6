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
"""

from typing import Any, Protocol

import jax

Batch = dict[str, jax.Array]
PyTree = Any


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
