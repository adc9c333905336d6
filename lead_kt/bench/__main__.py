"""Throughput of the trainer's steps on whatever JAX sees, with a PyTorch side-by-side.

  python -m lead_kt.bench --config=configs/bench.py [--output=bench.jsonl] [--markdown=bench.md]
  python -m lead_kt.bench --config=configs/bench.py \
    --config.cases="('mvkt:xresnet1d101:32:1000:1:float32',)"
  python -m lead_kt.bench --compare A.jsonl B.jsonl

Writes one JSON line per case (and per device count of the scaling case) and prints a Markdown
table; ``--compare`` prints B / A ratios of two such files. See docs/benchmarks.md.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "bench config, e.g. configs/bench.py")
_OUTPUT = flags.DEFINE_string("output", "", "JSON lines file; empty: config.output")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Markdown table file; empty: output with .md")
_COMPARE = flags.DEFINE_bool("compare", False, "compare two JSON lines files given as arguments")
_SCALING_CHILD = flags.DEFINE_integer(
  "scaling_child", 0, "internal: measure the scaling case on this many simulated CPU devices"
)

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def main(argv):
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
  if _SCALING_CHILD.value:
    _scaling_child(cfg, _SCALING_CHILD.value, _OUTPUT.value)
    return
  output = pathlib.Path(_OUTPUT.value or cfg.output)
  markdown = pathlib.Path(_MARKDOWN.value or output.with_suffix(".md"))
  records = run(cfg, output)
  table = report.markdown_table(records)
  markdown.write_text(table)
  print(table, end="")
  print(f"wrote {output} and {markdown}")


def run(cfg, output: pathlib.Path) -> list[dict]:
  """Measures every case of ``cfg`` (then the scaling series), appending each record to
  ``output`` (overwritten) as soon as it is measured; returns the records."""
  from lead_kt import sharding
  from lead_kt.bench import core

  output.parent.mkdir(parents=True, exist_ok=True)
  output.write_text("")
  mesh = sharding.make_mesh()
  records = []
  for spec in cfg.cases:
    case = core.Case.parse(spec)
    record = core.measure_case(case, cfg, mesh)
    if record["status"] == "ok":
      record["torch"] = torch_side_by_side(case, cfg, record)
    records.append(_emit(record, output))
  if cfg.scaling.case and cfg.scaling.device_counts:
    for record in scaling_series(cfg):
      records.append(_emit(record, output))
  return records


def _emit(record: dict, output: pathlib.Path) -> dict:
  with output.open("a") as f:
    f.write(json.dumps(record) + "\n")
  if record["status"] == "ok":
    print(
      f"{record['spec']} on {record.get('mesh_devices')} device(s): "
      f"{record['samples_per_s']:,.0f} samples/s (step {record['step_ms']['median']:.1f} ms, "
      f"compile {record['compile_s']:.1f} s; load {record['loadavg']})",
      flush=True,
    )
  else:
    print(f"{record['spec']}: skipped ({record['note']})", flush=True)
  return record


def torch_side_by_side(case, cfg, record: dict) -> dict | None:
  """PyTorch eager (and ``torch.compile``) figures of the same step, with JAX / PyTorch ratios of
  samples/s; None when disabled, a ``note`` when there is no twin or no torch."""
  if not cfg.torch.enabled:
    return None
  try:
    import torch

    from lead_kt.bench import torch_ref
  except ImportError:
    return {"note": "torch is not installed (pip install -e .[torch])"}
  from lead_kt.bench import core

  if (
    case.method not in torch_ref.METHODS
    or case.backbone not in torch_ref.BACKBONES
    or case.dtype != "float32"
    or case.backbone in cfg.backbone_kwargs
    or case.teacher not in ("", case.backbone)
  ):
    return {"note": f"no PyTorch twin of {case.method} with {case.backbone} in {case.dtype}"}
  if cfg.torch.threads:
    torch.set_num_threads(cfg.torch.threads)
  batch = core.synthetic_batch(case, cfg.num_classes, cfg.num_train)
  leads = 12 if case.method == "teacher" else case.leads
  flax_count = core.backbone_param_count(case.backbone, leads, cfg.num_classes, case.crop_len)
  figures = {"torch": torch.__version__, "threads": torch.get_num_threads()}
  modes = ("eager", "compile") if cfg.torch.compile else ("eager",)
  for mode in modes:
    step = torch_ref.make_step(
      case.method,
      case.backbone,
      batch,
      cfg.num_classes,
      cfg.num_train,
      cfg.num_negatives,
      core.run_config(case, cfg).clt.head_hidden if case.method == "mvkt" else 0,
      compile_model=mode == "compile",
    )
    if step.num_params != flax_count:
      raise AssertionError(
        f"torch_ref {case.backbone} has {step.num_params:,} parameters, the Flax one {flax_count:,}"
      )
    first_s, seconds = torch_ref.measure(step, cfg.warmup_steps, cfg.timed_steps)
    summary = core.step_summary(seconds)
    samples_per_s = case.batch / (summary["median"] / 1e3)
    figures[mode] = {
      "first_step_s": first_s,
      "step_ms": summary,
      "samples_per_s": samples_per_s,
      "jax_ratio": record["samples_per_s"] / samples_per_s,
    }
    print(
      f"  torch {mode}: {samples_per_s:,.0f} samples/s, JAX/torch "
      f"{figures[mode]['jax_ratio']:.2f} (load {core.environment()['loadavg']})",
      flush=True,
    )
  figures["num_params"] = flax_count
  return figures


def scaling_series(cfg) -> list[dict]:
  """The scaling case at each device count with a fixed per-device batch (weak scaling): real
  devices in this process on accelerators, simulated CPU devices in one subprocess per count."""
  import jax

  from lead_kt import sharding
  from lead_kt.bench import core

  base = core.Case.parse(cfg.scaling.case)
  records = []
  for count in cfg.scaling.device_counts:
    case = base.with_batch(base.batch * count)
    if jax.default_backend() == "cpu":
      record = _simulated(count)
    elif count <= jax.device_count():
      record = core.measure_case(case, _without_pipeline(cfg), sharding.make_mesh(1, count))
    else:
      record = {"spec": case.spec, "case": dataclasses.asdict(case), **core.environment()}
      record.update(status="skipped", note=f"only {jax.device_count()} devices")
    record["scaling"] = {"per_device_batch": base.batch, "devices": count}
    records.append(record)
  single = next((r for r in records if r["status"] == "ok" and r["mesh_devices"] == 1), None)
  for record in records:
    if single is not None and record["status"] == "ok":
      per_device = record["samples_per_s_per_device"]
      record["weak_scaling_efficiency"] = per_device / single["samples_per_s_per_device"]
  return records


def _without_pipeline(cfg):
  cfg = cfg.copy_and_resolve_references()
  cfg.pipeline.enabled = False
  cfg.torch.enabled = False
  return cfg


def _simulated(count: int) -> dict:
  """Runs this command again with ``--scaling_child=count`` on ``count`` CPU devices."""
  env = dict(os.environ)
  xla_flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT_FLAG)]
  env["XLA_FLAGS"] = " ".join([*xla_flags, f"{_DEVICE_COUNT_FLAG}={count}"])
  env["JAX_PLATFORMS"] = "cpu"
  passed = [a for a in sys.argv[1:] if not a.startswith(("--output", "--markdown"))]
  if not any(a.startswith("--config") for a in passed):
    raise RuntimeError("the simulated-device scaling series needs the command line's --config")
  with tempfile.TemporaryDirectory() as scratch:
    child_output = pathlib.Path(scratch) / "scaling.jsonl"
    command = [
      sys.executable,
      "-m",
      "lead_kt.bench",
      *passed,
      f"--scaling_child={count}",
      f"--output={child_output}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
      raise RuntimeError(f"scaling run on {count} simulated devices failed:\n{done.stderr[-3000:]}")
    return json.loads(child_output.read_text())


def _scaling_child(cfg, count: int, output: str) -> None:
  import jax

  from lead_kt import sharding
  from lead_kt.bench import core

  if jax.device_count() != count:
    raise RuntimeError(f"--scaling_child={count}, but JAX sees {jax.device_count()} devices")
  base = core.Case.parse(cfg.scaling.case)
  record = core.measure_case(
    base.with_batch(base.batch * count), _without_pipeline(cfg), sharding.make_mesh()
  )
  pathlib.Path(output).write_text(json.dumps(record))


if __name__ == "__main__":
  app.run(main)
