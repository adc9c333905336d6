"""The device mesh, the shardings of batches and state, and multi-process start-up.

One mesh with a ``data`` axis (batch parallelism) and a ``model`` axis (size 1 for now; room for
tensor parallelism). Axes are ``Auto``: XLA's partitioner propagates shardings through the step, so
a BatchNorm mean over a batch sharded on ``data`` is the global mean without any collective written
by hand.
"""

import jax
import numpy as np
from absl import flags, logging
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  heartbeat_timeout_s: int = 100,
) -> None:
  """Joins a multi-process job: a TPU pod slice or SLURM find everything by themselves; elsewhere
  (launch/local.py) the coordinator address, the process count and this process's id are given.

  A process that stops sending heartbeats for ``heartbeat_timeout_s`` counts as dead, and the
  coordination service then ends every other process (a collective waiting for the dead peer
  would otherwise wait forever).
  """
  # Collectives between processes on CPU; set before the backend starts (jax 0.10 defaults to
  # gloo, later versions may not).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  explicit = None not in (coordinator_address, num_processes, process_id)
  jax.distributed.initialize(
    coordinator_address,
    num_processes,
    process_id,
    # With all three given, nothing to detect (a SLURM allocation around a local job would
    # otherwise pin each process to one GPU).
    cluster_detection_method="deactivate" if explicit else None,
    heartbeat_timeout_seconds=heartbeat_timeout_s,
  )
  logging.info(
    "process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def define_distributed_flags() -> None:
  """The flags of an entry point that can join a multi-process job (lead_kt.main, lead_kt.bench)."""
  flags.DEFINE_bool(
    "multiprocess", False, "Call jax.distributed.initialize() (TPU pod slices, SLURM, multi-node)."
  )
  # Unset, jax.distributed finds them itself on TPU VMs and under SLURM; launch/local.py sets them.
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.")
  flags.DEFINE_integer("num_processes", None, "Processes in the job.")
  flags.DEFINE_integer("process_id", None, "This process's id, 0 .. num_processes - 1.")
  flags.DEFINE_integer(
    "heartbeat_timeout_s",
    100,
    "A process silent this long counts as dead; the others then exit with an error.",
  )


def initialize_from_flags() -> None:
  """Joins the job that ``define_distributed_flags``' flags describe (nothing without
  ``--multiprocess``)."""
  if flags.FLAGS.multiprocess:
    initialize_distributed(
      flags.FLAGS.coordinator_address,
      flags.FLAGS.num_processes,
      flags.FLAGS.process_id,
      flags.FLAGS.heartbeat_timeout_s,
    )


def _mesh_devices(model_parallelism: int, num_devices: int) -> list:
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"mesh.num_devices = {num_devices}, but only {len(devices)} devices exist")
    devices = devices[:num_devices]
  if len(devices) % model_parallelism:
    raise ValueError(f"{len(devices)} devices do not split into model axis {model_parallelism}")
  return devices


def data_axis_size(model_parallelism: int = 1, num_devices: int = 0) -> int:
  """The size of the ``data`` axis of ``make_mesh(model_parallelism, num_devices)``."""
  return len(_mesh_devices(model_parallelism, num_devices)) // model_parallelism


def make_mesh(model_parallelism: int = 1, num_devices: int = 0) -> jax.sharding.Mesh:
  """A ``(data, model)`` mesh over the first ``num_devices`` devices (0 = every device)."""
  devices = _mesh_devices(model_parallelism, num_devices)
  return jax.make_mesh(
    (len(devices) // model_parallelism, model_parallelism),
    (DATA_AXIS, MODEL_AXIS),
    axis_types=(AxisType.Auto, AxisType.Auto),
    devices=devices,
  )


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  data_size = mesh.shape[DATA_AXIS]
  if global_batch_size % data_size or global_batch_size % jax.process_count():
    raise ValueError(
      f"batch size {global_batch_size} must be a multiple of the data axis ({data_size} devices) "
      f"and of the process count ({jax.process_count()})"
    )


def to_host(tree):
  """Fetches (possibly multi-process) global arrays as numpy arrays on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)
