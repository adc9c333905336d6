"""Orbax checkpoints of a run: the latest N (to resume) and the best by validation (to evaluate).

``WORKDIR/checkpoints/<step>``: the whole train state, the data iterator's state and the run's
progress (best score so far), saved asynchronously at every epoch end and on preemption.
``WORKDIR/best/<step>``: the parameters and method state of the epoch with the best validation
score; the test split is evaluated once, from here.
"""

import os
import signal
import threading

import jax
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


class RunCheckpoints:
  def __init__(self, workdir: str, keep_latest: int, async_save: bool):
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep_latest, enable_async_checkpointing=async_save, create=True
    )
    workdir = absolute_path(workdir)
    self.latest = ocp.CheckpointManager(
      workdir / "checkpoints", options=options, item_names=("state", "data", "progress")
    )
    best_options = ocp.CheckpointManagerOptions(
      max_to_keep=1, enable_async_checkpointing=async_save, create=True
    )
    self.best = ocp.CheckpointManager(workdir / "best", options=best_options, item_names=("model",))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, data_state: dict, progress: dict, force: bool = False) -> None:
    self.latest.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        progress=ocp.args.JsonSave(progress),
      ),
      force=force,
    )

  def restore(self, abstract_state):
    """Returns ``(state, data_state, progress)`` of the latest checkpoint."""
    step = self.latest.latest_step()
    try:
      restored = self.latest.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore(),
          progress=ocp.args.JsonRestore(),
        ),
      )
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise CheckpointError(
        f"cannot restore {self.latest.directory / str(step)} into this run's state: {e}"
      ) from e
    return restored.state, restored.data, restored.progress

  def save_best(self, step: int, model: dict) -> None:
    self.best.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model)), force=True)

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
  try:
    restored = manager.restore(
      step, args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_model))
    )
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    raise CheckpointError(
      f"the checkpoint {manager.directory / str(step)} does not fit the expected network "
      f"(another architecture or class count?): {e}"
    ) from e
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
    if threading.current_thread() is threading.main_thread():
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
