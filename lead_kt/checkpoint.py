"""Orbax checkpoints of a run: the latest N (to resume) and the best by validation (to evaluate).

``WORKDIR/checkpoints/<step>``: the whole train state, the data iterator's state and the run's
progress (best score so far), saved asynchronously at every epoch end and on preemption.
``WORKDIR/best/<step>``: the parameters and method state of the epoch with the best validation
score; the test split is evaluated once, from here.

Each step also records a fingerprint of what it holds (see ``fingerprint``), so that a restore
either gives back exactly what was saved or fails. A latest step that fails is skipped for the
next older one and then moved aside to ``checkpoints/<step>.damaged-<n>``.
"""

import hashlib
import json
import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored into the configured run."""


def absolute_path(path) -> epath.Path:
  """Orbax wants absolute paths; cloud paths (gs://...) are absolute already."""
  path = str(path)
  return epath.Path(path if "://" in path else os.path.abspath(os.path.expanduser(path)))


def fingerprint(arrays, *documents) -> dict:
  """What a restore must give back bit for bit: a wrapping sum of each array's bits (one flipped
  bit changes it) and a digest of the JSON documents. Orbax checksums its index (OCDBT) but
  neither the array chunks nor the JSON items, so damage there would otherwise restore silently.
  """
  text = json.dumps(documents, sort_keys=True)
  return {
    "array_bits": [int(total) for total in _bit_sums(jax.tree.leaves(arrays))],
    "documents_sha256": hashlib.sha256(text.encode()).hexdigest(),
  }


@jax.jit
def _bit_sums(leaves: list) -> list:
  def bit_sum(x):
    if x.dtype == jnp.bool_:
      x = x.astype(jnp.uint8)
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    return jnp.sum(bits.astype(jnp.uint32), dtype=jnp.uint32)

  return [bit_sum(x) for x in leaves]


_DIFFERS = "what it restores differs from what was saved (a damaged file)"


def _intact(manager: ocp.CheckpointManager, step: int, arrays, *documents) -> bool:
  saved = manager.metadata(step).custom_metadata.get("fingerprint")
  # Steps saved before fingerprints were recorded have none to compare with.
  return saved is None or saved == fingerprint(arrays, *documents)


def _on_every_process(ok: bool) -> bool:
  """Whether ``ok`` holds on all processes: each reads its own shards, so damage may show on one."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


class RunCheckpoints:
  def __init__(self, workdir: str, keep_latest: int, async_save: bool):
    # A save cut short (a kill) leaves a `<step>.orbax-checkpoint-tmp` folder: removed on start.
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep_latest,
      enable_async_checkpointing=async_save,
      create=True,
      cleanup_tmp_directories=True,
    )
    workdir = absolute_path(workdir)
    self.latest = ocp.CheckpointManager(
      workdir / "checkpoints", options=options, item_names=("state", "data", "progress")
    )
    best_options = ocp.CheckpointManagerOptions(
      max_to_keep=1,
      enable_async_checkpointing=async_save,
      create=True,
      cleanup_tmp_directories=True,
    )
    self.best = ocp.CheckpointManager(workdir / "best", options=best_options, item_names=("model",))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, data_state: dict, progress: dict, force: bool = False) -> None:
    # `progress` names the best step: that step must be complete in best/ before this one counts.
    self.best.wait_until_finished()
    self.latest.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        progress=ocp.args.JsonSave(progress),
      ),
      force=force,
      custom_metadata={"fingerprint": fingerprint(state, data_state, progress)},
    )

  def restore(self, abstract_state):
    """Returns ``(state, data_state, progress)`` of the newest latest step that restores intact.

    A step that fails is logged and the next older one tried. Once one restores, the newer steps
    are moved aside (kept for inspection, and out of the way of the next save of their step). If
    none restores, nothing is moved: all failing alike may mean a changed config, not damage.
    """
    failed = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      restored, error = self._restore_step(step, abstract_state)
      if _on_every_process(error is None):
        break
      error = error or "it failed on another process"
      logging.warning(
        "cannot restore the checkpoint %s (%s)", self.latest.directory / str(step), error
      )
      failed.append((step, error))
    else:
      tried = "; ".join(f"step {step}: {error}" for step, error in failed)
      raise CheckpointError(
        f"no checkpoint in {self.latest.directory} can be restored into this run's state (damaged "
        f"files, or a config that changed the network?); tried {tried}. Nothing was moved or "
        "deleted: repair or remove them, or use another workdir"
      )
    for step, _ in failed:
      self._move_aside(step)
    return restored.state, restored.data, restored.progress

  def _restore_step(self, step: int, abstract_state):
    """``(restored, None)``, or ``(None, error)``: Orbax and tensorstore raise many kinds of errors
    for damaged files (ValueError, OSError, plain Exception), so any error counts."""
    try:
      restored = self.latest.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore(),
          progress=ocp.args.JsonRestore(),
        ),
      )
      if not _intact(self.latest, step, restored.state, restored.data, restored.progress):
        raise CheckpointError(_DIFFERS)
    except Exception as error:
      return None, error
    return restored, None

  def _move_aside(self, step: int) -> None:
    source = self.latest.directory / str(step)
    if jax.process_index() == 0:
      number = 1
      while (target := self.latest.directory / f"{step}.damaged-{number}").exists():
        number += 1
      source.rename(target)
      logging.warning("moved the damaged checkpoint %s aside to %s", source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"lead_kt: moved checkpoint {step} aside")
    self.latest.reload()

  def drop_best_after(self, step: int) -> None:
    """Deletes best steps newer than the state that training continues from: the run died between
    the best and the latest save, or a damaged latest step was skipped. Training replays those
    epochs exactly, saving the same best again."""
    for best_step in self.best.all_steps():
      if best_step > step:
        logging.warning(
          "dropping %s: training resumes before it", self.best.directory / str(best_step)
        )
        self.best.delete(best_step)

  def save_best(self, step: int, model: dict) -> None:
    self.best.save(
      step,
      args=ocp.args.Composite(model=ocp.args.StandardSave(model)),
      force=True,
      custom_metadata={"fingerprint": fingerprint(model)},
    )

  def restore_best(self, abstract_model: dict) -> dict:
    return restore_model(self.best, abstract_model)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def restore_model(manager: ocp.CheckpointManager, abstract_model: dict) -> dict:
  step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"no checkpoint in {manager.directory}")
  path = manager.directory / str(step)
  try:
    restored = manager.restore(
      step, args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_model))
    )
    intact = _intact(manager, step, restored.model)
  except Exception as e:  # Orbax and tensorstore raise many kinds of errors for damaged files.
    raise CheckpointError(
      f"the checkpoint {path} is damaged or does not fit the expected network (another "
      f"architecture or class count?): {e}"
    ) from e
  if not intact:
    raise CheckpointError(f"the checkpoint {path} is damaged: {_DIFFERS}")
  return restored.model


def load_best_model(workdir: str, abstract_model: dict) -> dict:
  """The best-by-validation ``{"params", "stats"}`` of another run (e.g. a trained teacher)."""
  directory = absolute_path(workdir) / "best"
  if not directory.exists():
    raise CheckpointError(f"{directory} does not exist: is {workdir} a finished lead_kt run?")
  manager = ocp.CheckpointManager(directory, item_names=("model",))
  try:
    return restore_model(manager, abstract_model)
  finally:
    manager.close()


class Preemption:
  """SIGTERM asks the run to save a checkpoint and exit cleanly at the next step boundary."""

  def __init__(self):
    self._requested = threading.Event()
    self._previous = None

  def __enter__(self):
    # With several processes, JAX's own SIGTERM handler (installed by jax.distributed.initialize)
    # tells the coordination service, which picks one step for every process to stop at; a Python
    # handler would replace it and hide the signal.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _on_signal(self, signum, frame):
    logging.warning("SIGTERM received (pid %d): checkpointing and exiting", os.getpid())
    self._requested.set()

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      # Every process must stop at the same step: JAX's preemption service agrees on one.
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()
