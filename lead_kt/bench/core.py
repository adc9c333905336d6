"""Train-step throughput of the trainer's own step, one record per benchmark case.

A case names a method, a backbone, a global batch, a crop length, a number of leads and a compute
dtype. Its step is built exactly as ``lead_kt.train`` builds it (``methods.create``,
``train._init_state``, ``train._make_train_step``, the trainer's shardings and donation) on
synthetic batches placed on the mesh, compiled once, then timed step by step with
``block_until_ready``. Each record also carries XLA's FLOP count, the memory figures the backend
reports, MFU where the device's peak is known, and the input pipeline's own samples/s for the same
batch shape, so a reader can see whether the step or the input limits training.
"""

import dataclasses
import functools
import importlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jaxlib
import ml_collections
import numpy as np

from lead_kt import config_fields, input_pipeline, logger, methods, models, optim, sharding, train
from lead_kt.bench import pipeline_speed

ALL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
DTYPES = ("float32", "bfloat16")
_PIPELINE_DATASET = "lead_kt_bench_synthetic"
_PIPELINE_RECORD_LEN = 1000  # pipeline_speed's synthetic records: 10 s at 100 Hz, or the crop

# Dense peak FLOP/s per device from the vendors' data sheets (NVIDIA: without sparsity; FP32 is the
# non-tensor-core figure, so XLA's TF32 matmuls can exceed 100 % "float32" MFU). Google publishes
# no FP32 peak for TPUs. Matched as substrings of ``device.device_kind`` in this order (the
# specific names before the ones they contain).
PEAK_FLOPS = (
  ("TPU v4", {"bfloat16": 275e12, "float32": None}),
  ("TPU v5 lite", {"bfloat16": 197e12, "float32": None}),
  ("TPU v5e", {"bfloat16": 197e12, "float32": None}),
  ("TPU v5", {"bfloat16": 459e12, "float32": None}),  # v5p reports "TPU v5" (or "TPU v5p")
  ("TPU v6 lite", {"bfloat16": 918e12, "float32": None}),
  ("TPU v6e", {"bfloat16": 918e12, "float32": None}),
  ("A100", {"bfloat16": 312e12, "float32": 19.5e12}),
  ("H100 PCIe", {"bfloat16": 756e12, "float32": 51e12}),
  ("H100 NVL", {"bfloat16": 835e12, "float32": 60e12}),
  ("H100", {"bfloat16": 989e12, "float32": 67e12}),  # SXM ("NVIDIA H100 80GB HBM3")
  ("H200 NVL", {"bfloat16": 835e12, "float32": 60e12}),
  ("H200", {"bfloat16": 989e12, "float32": 67e12}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The dense peak FLOP/s of one ``device_kind`` device in ``dtype``; None when unknown."""
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
  for name, peaks in PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return peaks[dtype]
  return None


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark combination, written ``method:backbone:batch:crop_len:leads:dtype[:teacher]``.

  ``batch`` is global (over all devices). ``leads`` is the student's first ``leads`` standard leads
  (teacher runs read all 12). ``backbone`` is the trained network and, for transfer methods, the
  frozen teacher too unless ``teacher`` names another (e.g. a small student of net1d); for
  ``signal_recon`` (whose student is the VAE) it is the teacher. ``dtype`` is both networks'.
  """

  method: str
  backbone: str
  batch: int
  crop_len: int
  leads: int
  dtype: str
  teacher: str = ""  # "" = backbone

  @classmethod
  def parse(cls, spec: str) -> "Case":
    parts = spec.split(":")
    if len(parts) not in (6, 7):
      raise ValueError(
        f"bench case {spec!r}: expected method:backbone:batch:crop_len:leads:dtype[:teacher]"
      )
    method, backbone, batch, crop_len, leads, dtype, *teacher = parts
    try:
      case = cls(method, backbone, int(batch), int(crop_len), int(leads), dtype, *teacher)
    except ValueError as error:
      raise ValueError(f"bench case {spec!r}: batch, crop_len, leads must be integers") from error
    if case.method not in methods.METHODS:
      raise ValueError(f"bench case {spec!r}: unknown method; known: {', '.join(methods.METHODS)}")
    if case.dtype not in DTYPES:
      raise ValueError(f"bench case {spec!r}: unknown dtype; known: {', '.join(DTYPES)}")
    if not 1 <= case.leads <= 12 or (case.method == "teacher" and case.leads != 12):
      raise ValueError(f"bench case {spec!r}: leads must be 1..12 (12 for the teacher)")
    if case.batch < 1 or case.crop_len < 1:
      raise ValueError(f"bench case {spec!r}: batch and crop_len must be positive")
    return case

  @property
  def spec(self) -> str:
    return ":".join(str(v) for v in dataclasses.astuple(self) if v != "")

  def with_batch(self, batch: int) -> "Case":
    return dataclasses.replace(self, batch=batch)


def run_config(case: Case, bench_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The trainer config of ``case``: ``configs/<method>.py`` with the case's fields and the bench
  config's ``method_overrides[method]`` / ``backbone_kwargs[backbone]`` applied."""
  config_module = "teacher" if case.method == "teacher" else case.method
  config = importlib.import_module(f"configs.{config_module}").get_config()
  no_kwargs = ml_collections.ConfigDict()
  kwargs = bench_cfg.backbone_kwargs.get(case.backbone, no_kwargs)
  teacher = case.teacher or case.backbone
  with config.unlocked():
    config.method = case.method
    config.batch_size = case.batch
    config.data.crop_len = case.crop_len
    config.data.student_leads = ALL_LEADS[: case.leads]
    config.teacher.backbone = teacher
    config.teacher.dtype = case.dtype
    teacher_kwargs = bench_cfg.backbone_kwargs.get(teacher, no_kwargs)
    config.teacher.kwargs = ml_collections.ConfigDict(teacher_kwargs.to_dict())
    config.student.dtype = case.dtype
    if case.method != "signal_recon":
      config.student.backbone = case.backbone
      config.student.kwargs = ml_collections.ConfigDict(kwargs.to_dict())
    if case.method == "mvkt":
      config.clt.num_negatives = bench_cfg.num_negatives
    config_fields.set_fields(config, bench_cfg.method_overrides.get(case.method, ()))
  return config


def param_count(params) -> int:
  """Number of scalars in a pytree of parameters (arrays or shapes)."""
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def backbone_param_count(backbone: str, leads: int, num_classes: int, length: int) -> int:
  """Trainable parameters of the registered ``backbone`` for ``leads`` inputs (shapes only)."""
  module = models.get(backbone, num_classes)
  x = jax.ShapeDtypeStruct((2, length, leads), jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)
  return param_count(variables["params"])


def synthetic_batch(case: Case, num_classes: int, num_train: int, seed: int = 0) -> dict:
  """A host batch of the trainer's shapes: teacher [B,T,12], student [B,T,L], label [B,C],
  index [B] (distinct rows of a bank of ``num_train``), mask [B]."""
  rng = np.random.default_rng(seed)
  teacher = rng.normal(size=(case.batch, case.crop_len, 12)).astype(np.float32)
  return {
    "teacher": teacher,
    "student": np.ascontiguousarray(teacher[..., : case.leads]),
    "label": (rng.random((case.batch, num_classes)) < 0.3).astype(np.float32),
    "index": rng.permutation(max(num_train, case.batch))[: case.batch].astype(np.int32),
    "mask": np.ones((case.batch,), np.float32),
  }


@dataclasses.dataclass
class BuiltStep:
  """A compiled trainer step with the state and batch it runs on."""

  compiled: jax.stages.Compiled
  state: train.TrainState
  batch: dict
  compile_s: float
  num_params: int
  flops_per_step: float | None  # the whole (global) step, from the program before optimisation


def build_step(case: Case, bench_cfg: ml_collections.ConfigDict, mesh) -> BuiltStep:
  """Builds and compiles the trainer's step for ``case`` on ``mesh`` (raises ImportError when the
  method's module does not import)."""
  config = run_config(case, bench_cfg)
  methods.validate(config)
  sharding.check_batch_size(case.batch, mesh)
  num_classes, num_train = bench_cfg.num_classes, bench_cfg.num_train
  first_labels = None
  if case.method == "mvkt" and config.clt.negatives == "other_class":
    first_labels = np.random.default_rng(0).integers(0, num_classes, num_train)
  method = methods.create(config, num_classes, num_train, first_labels)
  data_sharding = sharding.batch_sharding(mesh)
  batch = jax.device_put(synthetic_batch(case, num_classes, num_train), data_sharding)
  tx, schedule = optim.create(config.optimizer, steps_per_epoch=100, num_epochs=config.num_epochs)
  init_fn = functools.partial(train._init_state, method, tx, batch)
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_shardings = train._state_shardings(method, abstract, mesh)
  state = jax.jit(init_fn, out_shardings=state_shardings)(jax.random.PRNGKey(0))
  step_fn = train._make_train_step(method, tx, schedule)
  collection = logger.metrics_collection(jax.eval_shape(step_fn, abstract, batch)[1].keys())

  # As the trainer's train_step: same shardings, donated state, metrics folded into a collection.
  def train_step(state, batch):
    new_state, scalars = step_fn(state, batch)
    return new_state, collection.single_from_model_output(**scalars)

  jitted = jax.jit(
    train_step,
    in_shardings=(state_shardings, data_sharding),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )
  start = time.perf_counter()
  lowered = jitted.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  num_params = param_count(state.params)
  return BuiltStep(compiled, state, batch, compile_s, num_params, cost_flops(lowered))


def time_steps(built: BuiltStep, warmup: int, timed: int) -> list[float]:
  """Seconds of each of ``timed`` steps after ``warmup`` steps, each waited for."""
  state = built.state
  for _ in range(warmup):
    state, metrics = built.compiled(state, built.batch)
    jax.block_until_ready((state, metrics))
  seconds = []
  for _ in range(timed):
    start = time.perf_counter()
    state, metrics = built.compiled(state, built.batch)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - start)
  built.state = state  # the old one was donated
  return seconds


def blocks(timed: int, rounds: int) -> list[int]:
  """``timed`` steps split into ``rounds`` blocks of near-equal size (fewer when ``timed`` is
  smaller; one block of 0 when it is 0)."""
  rounds = max(1, min(rounds, timed))
  return [timed // rounds + (i < timed % rounds) for i in range(rounds)]


def time_in_turns(
  built: BuiltStep, warmup: int, timed: int, rounds: int, rivals: Sequence[Callable[[int], None]]
) -> list[float]:
  """Seconds of each of ``timed`` steps after ``warmup``, timed in ``rounds`` blocks, each followed
  by as many steps of every rival (``rival(steps)`` times steps of its own), so that the machine's
  drift falls on every side alike. Without rivals, one block."""
  time_steps(built, warmup, 0)
  seconds = []
  for steps in blocks(timed, rounds if rivals else 1):
    seconds += time_steps(built, 0, steps)
    for rival in rivals:
      rival(steps)
  return seconds


def step_summary(seconds: list[float]) -> dict:
  """Median and spread (interquartile range, min, max) of step times, in milliseconds."""
  ms = sorted(1e3 * s for s in seconds)
  q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0], ms[0], ms[0])
  return {
    "median": statistics.median(ms),
    "iqr": q3 - q1,
    "min": ms[0],
    "max": ms[-1],
    "n": len(ms),
  }


def cost_flops(program: jax.stages.Lowered) -> float | None:
  """FLOPs of one run of ``program`` from XLA's cost analysis.

  The bench counts the lowered program (the whole step, before SPMD partitioning and
  optimisation): on a GPU the compiled program hands its convolutions to cuDNN as custom calls,
  which the cost analysis does not count (0.86 GFLOP for a 32 GFLOP teacher step on an H200).
  """
  analysis = program.cost_analysis()
  if isinstance(analysis, list | tuple):  # older jax: one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])


def memory_figures(compiled: jax.stages.Compiled, devices) -> dict:
  """Peak bytes in use on this process's ones of the devices (None where the backend keeps no
  statistics, e.g. CPU) and the compiled program's own buffer sizes per device."""
  local = [d for d in devices if d.process_index == jax.process_index()]
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in local]
  peaks = [p for p in peaks if p is not None]
  figures = {"peak_bytes_in_use": max(peaks) if peaks else None}
  analysis = compiled.memory_analysis()
  for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"):
    figures[field] = getattr(analysis, field, None) if analysis is not None else None
  return figures


_pipeline_cache: dict[tuple, float] = {}


def pipeline_rate(case: Case, bench_cfg: ml_collections.ConfigDict, data_sharding) -> float:
  """Samples/s of the trainer's input pipeline for ``case``'s batch shape, on pipeline_speed's
  synthetic in-memory records (global batches placed on the mesh and waited for)."""
  key = (case.batch, case.crop_len, case.leads, data_sharding)
  if key in _pipeline_cache:
    return _pipeline_cache[key]
  num_records = max(bench_cfg.pipeline.num_records, 2 * case.batch)
  # Records long enough for the crop (10 s at 500 Hz for the net1d cases).
  length = max(_PIPELINE_RECORD_LEN, case.crop_len)
  records = functools.partial(pipeline_speed.synthetic_records, length=length)
  input_pipeline.register_memory_dataset(
    _PIPELINE_DATASET,
    {
      "train": records(num_records),
      "validation": records(8, first=num_records),
      "test": records(8, first=num_records + 8),
    },
    class_names=[f"class{i}" for i in range(5)],
    sampling_rate=100,
  )
  data_cfg = input_pipeline.default_data_config()
  data_cfg.name = _PIPELINE_DATASET
  data_cfg.crop_len = case.crop_len
  data_cfg.student_leads = ALL_LEADS[: case.leads]
  data_cfg.worker_count = bench_cfg.pipeline.worker_count
  normalizer = input_pipeline.fit_normalizer(
    input_pipeline.load_split(data_cfg, "train").chunks(), data_cfg.normalization
  )
  batches = input_pipeline.train_iterator(data_cfg, normalizer, case.batch, data_sharding, seed=0)
  try:
    rate = pipeline_speed.samples_per_second(
      batches, case.batch, bench_cfg.pipeline.seconds, jax.block_until_ready
    )
  finally:
    batches.close()
  _pipeline_cache[key] = rate
  return rate


def environment() -> dict:
  """Versions and devices every record carries."""
  devices = jax.devices()
  return {
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "backend": jax.default_backend(),
    "device_kind": devices[0].device_kind,
    "device_count": len(devices),
    "process_count": jax.process_count(),
    "cpu_count": os.cpu_count(),
    "loadavg": _loadavg(),
    # With a warm persistent cache, compile_s is the time to read the executable back.
    "compilation_cache": jax.config.jax_compilation_cache_dir
    if jax.config.jax_enable_compilation_cache
    else None,
  }


def _loadavg() -> list[float] | None:
  try:
    return [float(v) for v in open("/proc/loadavg").read().split()[:3]]
  except OSError:
    return None


def measure_case(
  case: Case,
  bench_cfg: ml_collections.ConfigDict,
  mesh=None,
  rivals: Sequence[Callable[[int], None]] = (),
) -> dict:
  """The JSON record of one case (``status`` "skipped" with a ``note`` when its method's module
  does not import); the step is timed in ``bench_cfg.torch.rounds`` turns with ``rivals`` (see
  ``time_in_turns``), e.g. PyTorch's step of the same case."""
  mesh = mesh if mesh is not None else sharding.make_mesh()
  record = {"case": dataclasses.asdict(case), "spec": case.spec, **environment()}
  try:
    built = build_step(case, bench_cfg, mesh)
  except ImportError as error:
    return {**record, "status": "skipped", "note": f"method {case.method} does not import: {error}"}
  devices = list(mesh.devices.flat)
  record["mesh_devices"] = len(devices)
  seconds = time_in_turns(
    built, bench_cfg.warmup_steps, bench_cfg.timed_steps, bench_cfg.torch.rounds, rivals
  )
  step = step_summary(seconds)
  samples_per_s = case.batch / (step["median"] / 1e3)
  flops_per_device = None if built.flops_per_step is None else built.flops_per_step / len(devices)
  peak = peak_flops(devices[0].device_kind, case.dtype)
  mfu = None
  if flops_per_device is not None and peak:
    mfu = flops_per_device / (step["median"] / 1e3) / peak
  input_rate = None
  if bench_cfg.pipeline.enabled:
    input_rate = pipeline_rate(case, bench_cfg, sharding.batch_sharding(mesh))
  record.update(
    status="ok",
    num_params=built.num_params,
    compile_s=built.compile_s,
    step_ms=step,
    samples_per_s=samples_per_s,
    samples_per_s_per_device=samples_per_s / len(devices),
    memory=memory_figures(built.compiled, devices),
    flops_per_step=built.flops_per_step,
    flops_per_device_step=flops_per_device,
    peak_flops_per_device=peak,
    mfu=mfu,
    pipeline_samples_per_s=input_rate,
    limited_by=None if input_rate is None else ("input" if input_rate < samples_per_s else "step"),
    config=json.loads(run_config(case, bench_cfg).to_json_best_effort()),
  )
  return record
