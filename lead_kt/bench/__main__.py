"""Throughput of the trainer's steps on whatever JAX sees, with a PyTorch side-by-side.

  python -m lead_kt.bench --config=configs/bench.py [--output=bench.jsonl] [--markdown=bench.md]
  python -m lead_kt.bench --config=configs/bench.py \
    --config.cases="('mvkt:xresnet1d101:32:1000:1:float32',)"
  python -m lead_kt.bench --compare A.jsonl B.jsonl
  python -m lead_kt.bench --config=configs/bench.py --multiprocess=true   # on every host of a job

Writes one JSON line per case (and per device and process count of the scaling case) and prints a
Markdown table; ``--compare`` prints B / A ratios of two such files. In a multi-process job every
process measures and process 0 writes. See docs/benchmarks.md.
"""

import dataclasses
import json
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

from lead_kt import sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "bench config, e.g. configs/bench.py")
_OUTPUT = flags.DEFINE_string("output", "", "JSON lines file; empty: config.output")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Markdown table file; empty: output with .md")
_COMPARE = flags.DEFINE_bool("compare", False, "compare two JSON lines files given as arguments")
_SCALING_CHILD = flags.DEFINE_integer(
  "scaling_child", 0, "internal: measure the scaling case on this many simulated CPU devices"
)
_PROCESS_SCALING_CHILD = flags.DEFINE_bool(
  "process_scaling_child", False, "internal: measure the scaling case over this job's processes"
)
sharding.define_distributed_flags()

# After a child process fails, the others get this long to exit by themselves before a kill.
_CHILD_GRACE_S = 5.0
# The parent's config, handed to the scaling children exactly (tuples stay tuples).
_CHILD_CONFIG = """import pickle


def get_config():
  with open({path!r}, "rb") as f:
    return pickle.load(f)
"""


def main(argv):
  from lead_kt import compilation_cache
  from lead_kt.bench import report

  if _COMPARE.value:
    if len(argv) != 3:
      raise app.UsageError("--compare needs two JSON lines files: --compare A.jsonl B.jsonl")
    print(report.compare(argv[1], argv[2]), end="")
    return
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cfg = _CONFIG.value
  if cfg is None:
    raise app.UsageError("--config=configs/bench.py is required (or --compare A.jsonl B.jsonl)")
  compilation_cache.enable()
  sharding.initialize_from_flags()
  if _SCALING_CHILD.value:
    _scaling_child(cfg, _SCALING_CHILD.value, _OUTPUT.value)
    return
  if _PROCESS_SCALING_CHILD.value:
    _process_scaling_child(cfg, _OUTPUT.value)
    return
  output = pathlib.Path(_OUTPUT.value or cfg.output)
  markdown = pathlib.Path(_MARKDOWN.value or output.with_suffix(".md"))
  records = run(cfg, output)
  if not _records_here():
    return
  table = report.markdown_table(records)
  markdown.write_text(table)
  print(table, end="")
  print(f"wrote {output} and {markdown}")


def run(cfg, output: pathlib.Path) -> list[dict]:
  """Measures every case of ``cfg`` (then the scaling series over devices and over processes),
  appending each record to ``output`` (overwritten; by process 0 only) as soon as it is measured;
  returns the records."""
  from lead_kt.bench import core

  if _records_here():
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("")
  mesh = sharding.make_mesh()
  records = []
  for spec in cfg.cases:
    case = core.Case.parse(spec)
    torch_figures, rivals = torch_side_by_side(case, cfg)
    record = core.measure_case(case, cfg, mesh, rivals)
    if record["status"] == "ok":
      record["torch"] = torch_ratios(case, torch_figures, record)
    records.append(_emit(record, output))
  if cfg.scaling.case and cfg.scaling.device_counts:
    for record in scaling_series(cfg):
      records.append(_emit(record, output))
  if cfg.scaling.case and cfg.scaling.process_counts:
    for record in process_scaling_series(cfg):
      records.append(_emit(record, output))
  return records


def _records_here() -> bool:
  """Whether this process writes and prints the records (process 0 of a multi-process job)."""
  import jax

  return jax.process_index() == 0


def _emit(record: dict, output: pathlib.Path) -> dict:
  if not _records_here():
    return record
  with output.open("a") as f:
    f.write(json.dumps(record) + "\n")
  if record["status"] == "ok":
    print(
      f"{record['spec']} on {record.get('mesh_devices')} device(s) of "
      f"{record['process_count']} process(es): "
      f"{record['samples_per_s']:,.0f} samples/s (step {record['step_ms']['median']:.1f} ms, "
      f"compile {record['compile_s']:.1f} s; load {record['loadavg']})",
      flush=True,
    )
  else:
    print(f"{record['spec']}: skipped ({record['note']})", flush=True)
  return record


def torch_side_by_side(case, cfg) -> tuple[dict | None, list]:
  """PyTorch eager (and ``torch.compile``) steps of the same case, built and warmed up on the
  torch device that matches JAX's backend, in the case's dtype: their figures so far (None when
  disabled, a ``note`` when there is no twin, no torch or no matching torch device) and one timer
  per step for ``core.measure_case`` to run in turns with JAX's."""
  if not cfg.torch.enabled:
    return None, []
  try:
    import torch

    from lead_kt.bench import torch_ref
  except ImportError:
    return {"note": "torch is not installed (pip install -e .[torch])"}, []
  from lead_kt.bench import core

  if (
    case.method not in torch_ref.METHODS
    or case.backbone not in torch_ref.BACKBONES
    or case.backbone in cfg.backbone_kwargs
    or case.teacher not in ("", case.backbone)
  ):
    return {"note": f"no PyTorch twin of {case.method} with {case.backbone}"}, []
  device, note = _torch_device(torch)
  if note:
    return {"note": note}, []
  if cfg.torch.threads:
    torch.set_num_threads(cfg.torch.threads)
  batch = core.synthetic_batch(case, cfg.num_classes, cfg.num_train)
  leads = 12 if case.method == "teacher" else case.leads
  flax_count = core.backbone_param_count(case.backbone, leads, cfg.num_classes, case.crop_len)
  figures = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "device": device,
    "dtype": case.dtype,
  }
  on_cuda = device == "cuda"
  if on_cuda:
    figures["device_kind"] = torch.cuda.get_device_name()
  rivals = []
  for mode in ("eager", "compile") if cfg.torch.compile else ("eager",):
    if on_cuda:  # the step's own peak: above what the steps built before it hold
      held = torch.cuda.memory_allocated()
      torch.cuda.reset_peak_memory_stats()
    step = torch_ref.make_step(
      case.method,
      case.backbone,
      batch,
      cfg.num_classes,
      cfg.num_train,
      cfg.num_negatives,
      core.run_config(case, cfg).clt.head_hidden if case.method == "mvkt" else 0,
      compile_model=mode == "compile",
      device=device,
      dtype=case.dtype,
    )
    if step.num_params != flax_count:
      raise AssertionError(
        f"torch_ref {case.backbone} has {step.num_params:,} parameters, the Flax one {flax_count:,}"
      )
    seconds = []
    figures[mode] = {"first_step_s": torch_ref.warm_up(step, cfg.warmup_steps), "seconds": seconds}
    if on_cuda:
      figures[mode]["peak_bytes"] = torch.cuda.max_memory_allocated() - held
    rivals.append(lambda steps, step=step, seconds=seconds: seconds.extend(step.time(steps)))
  figures["num_params"] = flax_count
  return figures, rivals


def _torch_device(torch) -> tuple[str, str]:
  """``(torch device, "")`` on JAX's kind of device, or ``("", why there is none)``: a twin on
  another kind of device than JAX's would time a different machine."""
  import jax

  backend = jax.default_backend()
  if backend == "cpu":
    return "cpu", ""
  if backend == "gpu" and torch.cuda.is_available():
    return "cuda", ""
  if backend == "gpu":
    return "", f"torch {torch.__version__} sees no GPU: the GPU side needs a CUDA build of torch"
  return "", f"no PyTorch twin on {backend} (torch runs on CPU or CUDA here)"


def torch_ratios(case, figures: dict | None, record: dict) -> dict | None:
  """``figures`` of ``torch_side_by_side`` with each step's times summarised, its samples/s and
  the JAX / PyTorch ratio of samples/s."""
  from lead_kt.bench import core

  for mode in ("eager", "compile"):
    if mode not in (figures or {}):
      continue
    summary = core.step_summary(figures[mode].pop("seconds"))
    samples_per_s = case.batch / (summary["median"] / 1e3)
    figures[mode].update(
      step_ms=summary,
      samples_per_s=samples_per_s,
      jax_ratio=record["samples_per_s"] / samples_per_s,
    )
    print(
      f"  torch {mode} ({figures['device']}, {figures['dtype']}): {samples_per_s:,.0f} samples/s, "
      "JAX/torch "
      f"{figures[mode]['jax_ratio']:.2f} (load {core.environment()['loadavg']})",
      flush=True,
    )
  return figures


def scaling_series(cfg) -> list[dict]:
  """The scaling case at each device count with a fixed per-device batch (weak scaling): real
  devices in this process on accelerators, simulated CPU devices in one subprocess per count."""
  import jax

  from lead_kt.bench import core

  base = core.Case.parse(cfg.scaling.case)
  records = []
  for count in cfg.scaling.device_counts:
    case = base.with_batch(base.batch * count)
    if jax.process_count() > 1:
      record = _skipped(case, "a device series runs in one process; the process series is the job")
    elif jax.default_backend() == "cpu":
      record = _simulated(cfg, count)
    elif count <= jax.device_count():
      record = core.measure_case(case, _without_pipeline(cfg), sharding.make_mesh(1, count))
    else:
      record = _skipped(case, f"only {jax.device_count()} devices")
    record["scaling"] = {"per_device_batch": base.batch, "devices": count}
    records.append(record)
  _add_efficiency(records, lambda r: r["mesh_devices"] == 1)
  return records


def process_scaling_series(cfg) -> list[dict]:
  """The scaling case on ``scaling.process_counts`` processes with a fixed per-device batch (weak
  scaling over processes). On CPU, each count is a job of real processes on this machine with
  ``scaling.devices_per_process`` simulated devices each, joined by jax.distributed (gloo
  collectives). Inside a multi-process job (on accelerators: one process per host), the one record
  of the job as it was launched, without an efficiency (there is no 1-process run to divide by)."""
  import jax

  from lead_kt.bench import core

  if jax.process_count() > 1:
    return [_measure_scaling(cfg)]
  base = core.Case.parse(cfg.scaling.case)
  per_process = cfg.scaling.devices_per_process
  if per_process < 1 or any(count < 1 for count in cfg.scaling.process_counts):
    raise ValueError(
      f"bench config: scaling.process_counts {tuple(cfg.scaling.process_counts)} and "
      f"scaling.devices_per_process {per_process} must be positive"
    )
  records = []
  for processes in cfg.scaling.process_counts:
    if jax.default_backend() == "cpu":
      record = _simulated_processes(cfg, processes)
    else:
      case = base.with_batch(base.batch * processes * per_process)
      note = "one process per host: run the bench with --multiprocess=true on every host"
      record = _skipped(case, note)
      record["scaling"] = _scaling_fields(base, processes * per_process, processes)
    records.append(record)
  _add_efficiency(records, lambda r: r["process_count"] == 1)
  return records


def _skipped(case, note: str) -> dict:
  from lead_kt.bench import core

  record = {"spec": case.spec, "case": dataclasses.asdict(case), **core.environment()}
  return {**record, "status": "skipped", "note": note}


def _scaling_fields(base, devices: int, processes: int) -> dict:
  return {"per_device_batch": base.batch, "devices": devices, "processes": processes}


def _add_efficiency(records: list[dict], is_reference) -> None:
  """Weak-scaling efficiency: per-device samples/s over that of the reference (1 device or
  1 process) record, when it was measured."""
  ok = [r for r in records if r["status"] == "ok"]
  reference = next((r for r in ok if is_reference(r)), None)
  for record in ok if reference is not None else ():
    per_device = record["samples_per_s_per_device"]
    record["weak_scaling_efficiency"] = per_device / reference["samples_per_s_per_device"]


def _without_pipeline(cfg):
  cfg = cfg.copy_and_resolve_references()
  cfg.pipeline.enabled = False
  cfg.torch.enabled = False
  return cfg


def _measure_scaling(cfg) -> dict:
  """The scaling case with its per-device batch over every device of this (possibly
  multi-process) job."""
  import jax

  from lead_kt.bench import core

  base = core.Case.parse(cfg.scaling.case)
  devices = jax.device_count()
  case = base.with_batch(base.batch * devices)
  record = core.measure_case(case, _without_pipeline(cfg), sharding.make_mesh())
  record["scaling"] = _scaling_fields(base, devices, jax.process_count())
  return record


def _child_config(cfg, scratch: pathlib.Path) -> str:
  """A config file for a scaling child that returns ``cfg`` as it is."""
  pickled = scratch / "config.pkl"
  pickled.write_bytes(pickle.dumps(cfg))
  path = scratch / "bench_config.py"
  path.write_text(_CHILD_CONFIG.format(path=str(pickled)))
  return str(path)


def _child_command(cfg, scratch: pathlib.Path, *flags: str) -> tuple[list[str], pathlib.Path]:
  """argv of a scaling child (this bench on ``cfg`` with ``flags``) and the file it writes."""
  child_output = scratch / "scaling.json"
  argv = [
    sys.executable,
    "-m",
    "lead_kt.bench",
    f"--config={_child_config(cfg, scratch)}",
    *flags,
    f"--output={child_output}",
  ]
  return argv, child_output


def _simulated(cfg, count: int) -> dict:
  """Runs the bench again with ``--scaling_child=count`` on ``count`` CPU devices."""
  from launch import local

  with tempfile.TemporaryDirectory() as scratch:
    command, child_output = _child_command(cfg, pathlib.Path(scratch), f"--scaling_child={count}")
    env = {**os.environ, **dict(local.simulated_cpu_env(count))}
    try:
      done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=cfg.scaling.timeout_s
      )
    except subprocess.TimeoutExpired as error:
      raise RuntimeError(
        f"scaling run on {count} simulated devices ran past scaling.timeout_s = "
        f"{cfg.scaling.timeout_s:g} s"
      ) from error
    if done.returncode != 0:
      raise RuntimeError(f"scaling run on {count} simulated devices failed:\n{done.stderr[-3000:]}")
    return json.loads(child_output.read_text())


def _simulated_processes(cfg, processes: int) -> dict:
  """Runs the bench again as a job of ``processes`` processes on this machine (launch/local.py's,
  ``scaling.devices_per_process`` CPU devices each) measuring the scaling case over all of their
  devices; returns process 0's record. Every process is killed on the way out."""
  from launch import local

  with tempfile.TemporaryDirectory() as scratch:
    scratch = pathlib.Path(scratch)
    argv, child_output = _child_command(
      cfg, scratch, "--multiprocess=true", "--process_scaling_child=true"
    )
    port = local.free_port()
    commands = local.job_commands(argv, processes, cfg.scaling.devices_per_process, port)
    end = local.run_job(
      commands,
      scratch,
      _CHILD_GRACE_S,
      stream_first=False,
      timeout_s=cfg.scaling.timeout_s,
    )
    if end.status != 0:
      log = local.log_path(scratch, end.failed_process).read_text(errors="replace")
      what = (
        f"ran past scaling.timeout_s = {cfg.scaling.timeout_s:g} s"
        if end.timed_out
        else f"failed with exit status {end.status}"
      )
      raise RuntimeError(
        f"process {end.failed_process} of the {processes}-process scaling run {what}; the end of "
        f"its output:\n{log[-3000:]}"
      )
    return json.loads(child_output.read_text())


def _scaling_child(cfg, count: int, output: str) -> None:
  import jax

  if jax.device_count() != count:
    raise RuntimeError(f"--scaling_child={count}, but JAX sees {jax.device_count()} devices")
  pathlib.Path(output).write_text(json.dumps(_measure_scaling(cfg)))


def _process_scaling_child(cfg, output: str) -> None:
  record = _measure_scaling(cfg)
  if _records_here():
    pathlib.Path(output).write_text(json.dumps(record))


if __name__ == "__main__":
  app.run(main)
