"""Training metrics to TensorBoard event files and the console, with a progress line.

Event files are written with tensorboardX (clu's metric writers would pull TensorFlow in); the
per-step values are accumulated with clu.metrics on the device and fetched once per log interval.
Only process 0 writes.
"""

import logging as std_logging
import time

import jax
import numpy as np
from absl import logging
from clu import metrics as clu_metrics
from etils import epath


class _QuietLibraries(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "lead_kt" in record.pathname


def quiet_library_logs() -> None:
  """Keeps the console to lead_kt's own progress: other libraries' INFO lines (Orbax logs every
  save and restore step) are dropped; their warnings and errors still show."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


def metrics_collection(names) -> type[clu_metrics.Collection]:
  """A clu Collection averaging each named scalar over the steps merged into it."""
  return clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n) for n in names})


class RunLogger:
  def __init__(
    self, workdir: str, total_steps: int, global_batch_size: int, name: str, resume_step: int = 0
  ):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self.name = name
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter

      (epath.Path(workdir) / "tensorboard").mkdir(parents=True, exist_ok=True)
      # A resumed run replays from resume_step: earlier events of later steps are purged, so
      # that a replayed epoch is not logged twice.
      self._writer = SummaryWriter(
        str(epath.Path(workdir) / "tensorboard"), purge_step=resume_step or None
      )
    self._last_time = None
    self._last_step = None
    self._start_time = time.time()

  def start(self, step: int) -> None:
    self._last_time, self._last_step = time.time(), step
    self._start_time = self._last_time
    self._start_step = step

  def write(self, step: int, scalars: dict, prefix: str) -> None:
    if self._writer is None:
      return
    for key, value in scalars.items():
      if np.ndim(value) == 0 and value is not None:
        self._writer.add_scalar(f"{prefix}/{key}", float(value), step)
    self._writer.flush()

  def train(self, step: int, epoch: int, scalars: dict) -> None:
    """Logs averaged train scalars with throughput and a progress line (epoch, step, ETA)."""
    now = time.time()
    steps = max(1, step - self._last_step)
    steps_per_s = steps / max(now - self._last_time, 1e-9)
    scalars = {
      **scalars,
      "steps_per_s": steps_per_s,
      "examples_per_s": steps_per_s * self.global_batch_size,
    }
    self._last_time, self._last_step = now, step
    done = step - self._start_step
    eta = (now - self._start_time) / max(done, 1) * (self.total_steps - step)
    self.write(step, scalars, "train")
    if jax.process_index() == 0:
      terms = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(scalars.items()))
      logging.info(
        "[%s] epoch %d step %d/%d (%.0f%%) ETA %s | %s",
        self.name,
        epoch,
        step,
        self.total_steps,
        100.0 * step / max(self.total_steps, 1),
        time.strftime("%H:%M:%S", time.gmtime(eta)),
        terms,
      )

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
