"""lead_kt.bench: records, the Markdown table, --compare, the MFU table, the PyTorch twins and
weak scaling over real processes."""

import json
import re
import time

import ml_collections
import numpy as np
import pytest

from configs import bench as bench_config
from lead_kt.bench import __main__ as bench_cli
from lead_kt.bench import core, report

_TINY_CASE = "baseline:fcn_wang:8:64:1:float32"


def _tiny_config() -> ml_collections.ConfigDict:
  cfg = bench_config.get_config()
  cfg.cases = (_TINY_CASE,)
  cfg.backbone_kwargs = ml_collections.ConfigDict({"fcn_wang": {"filters": (8, 8, 8)}})
  cfg.warmup_steps = 1
  cfg.timed_steps = 2
  cfg.pipeline.seconds = 0.2
  cfg.pipeline.num_records = 32
  cfg.torch.enabled = False
  cfg.scaling.device_counts = ()
  cfg.scaling.process_counts = ()
  return cfg


def test_tiny_bench_writes_a_record_and_a_table(tmp_path):
  output = tmp_path / "bench.jsonl"
  records = bench_cli.run(_tiny_config(), output)
  lines = output.read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0]) == records[0]
  record = records[0]
  assert record["status"] == "ok" and record["spec"] == _TINY_CASE
  for field in ("jax", "jaxlib", "device_kind", "device_count", "backend", "loadavg", "config"):
    assert field in record, field
  assert record["config"]["student"]["backbone"] == "fcn_wang"
  assert record["config"]["student"]["kwargs"] == {"filters": [8, 8, 8]}
  assert record["compile_s"] > 0
  assert record["step_ms"]["n"] == 2 and record["step_ms"]["median"] > 0
  assert record["samples_per_s"] == pytest.approx(8 / (record["step_ms"]["median"] / 1e3))
  assert record["samples_per_s_per_device"] == pytest.approx(record["samples_per_s"])
  assert record["flops_per_step"] > 0
  assert record["memory"]["temp_size_in_bytes"] > 0
  assert record["mfu"] is None  # no known peak for a CPU
  assert record["pipeline_samples_per_s"] > 0
  assert record["limited_by"] in ("input", "step")
  table = report.markdown_table(records).splitlines()
  assert table[0].startswith("| method | backbone |") and len(table) == 3
  assert table[2].startswith("| baseline | fcn_wang | 8 | 64 x 1 | float32 | 1 |")


def _process_scaling_config(*process_counts: int, case: str = "mvkt:fcn_wang:2:64:1:float32"):
  """Only the process series: the tiny fcn_wang with a small MVKT bank, 2 samples per device."""
  cfg = _tiny_config()
  cfg.cases = ()
  cfg.num_train = 64
  cfg.num_negatives = 16
  cfg.scaling.case = case
  cfg.scaling.process_counts = process_counts
  cfg.scaling.devices_per_process = 1
  return cfg


@pytest.mark.slow
def test_weak_scaling_over_real_processes(tmp_path):
  output = tmp_path / "bench.jsonl"
  records = bench_cli.run(_process_scaling_config(1, 2), output)
  assert [json.loads(line) for line in output.read_text().splitlines()] == records
  one, two = records
  assert one["status"] == two["status"] == "ok"
  assert (one["process_count"], one["mesh_devices"], one["case"]["batch"]) == (1, 1, 2)
  # Process 0 of the 2-process job recorded the step over both processes' devices.
  assert (two["process_count"], two["device_count"], two["mesh_devices"]) == (2, 2, 2)
  assert two["case"]["batch"] == 4 and two["step_ms"]["n"] == 2
  assert two["scaling"] == {"per_device_batch": 2, "devices": 2, "processes": 2}
  assert two["samples_per_s_per_device"] == pytest.approx(two["samples_per_s"] / 2)
  assert one["weak_scaling_efficiency"] == 1.0
  assert two["weak_scaling_efficiency"] == pytest.approx(
    two["samples_per_s_per_device"] / one["samples_per_s_per_device"]
  )
  rows = report.markdown_table(records).splitlines()[2:]
  assert rows[0].startswith("| mvkt | fcn_wang | 2 | 64 x 1 | float32 | 1 (1 process) |")
  assert rows[1].startswith("| mvkt | fcn_wang | 4 | 64 x 1 | float32 | 2 (2 processes) |")
  assert rows[1].endswith(f"| {two['weak_scaling_efficiency']:.2f} |")


def test_a_failing_scaling_process_is_named_with_its_output():
  cfg = _process_scaling_config(2, case="mvkt:no_such_net:2:64:1:float32")
  with pytest.raises(RuntimeError) as error:
    bench_cli.process_scaling_series(cfg)
  message = str(error.value)
  assert re.match(r"process [01] of the 2-process scaling run failed with exit status 1", message)
  assert "no_such_net" in message.split("the end of its output:")[1]


def test_a_scaling_job_past_its_time_limit_is_killed():
  cfg = _process_scaling_config(2)
  cfg.scaling.timeout_s = 0.5
  started = time.monotonic()
  with pytest.raises(RuntimeError, match=r"process 0 of the 2-process scaling run ran past"):
    bench_cli.process_scaling_series(cfg)
  assert time.monotonic() - started < 30


def test_bad_process_counts_are_rejected():
  with pytest.raises(ValueError, match="scaling.process_counts"):
    bench_cli.process_scaling_series(_process_scaling_config(1, 0))


def test_a_method_that_does_not_import_is_skipped_with_a_note(monkeypatch):
  def missing(*args):
    raise ImportError("No module named 'lead_kt.methods.feature_recon'")

  monkeypatch.setattr(core.methods, "create", missing)
  record = core.measure_case(core.Case.parse(_TINY_CASE), _tiny_config())
  assert record["status"] == "skipped" and "does not import" in record["note"]
  assert "skipped" in report.markdown_table([record])


def _fake_record(spec: str, samples_per_s: float, temp_bytes: int) -> dict:
  method, backbone, batch, crop_len, leads, dtype = spec.split(":")
  return {
    "spec": spec,
    "case": {
      "method": method,
      "backbone": backbone,
      "batch": int(batch),
      "crop_len": int(crop_len),
      "leads": int(leads),
      "dtype": dtype,
    },
    "status": "ok",
    "device_kind": "cpu",
    "device_count": 1,
    "mesh_devices": 1,
    "jax": "0.10.2",
    "samples_per_s": samples_per_s,
    "step_ms": {"median": 1e3 * int(batch) / samples_per_s},
    "compile_s": 10.0,
    "memory": {"temp_size_in_bytes": temp_bytes, "peak_bytes_in_use": None},
  }


def test_compare_prints_ratios_of_the_shared_cases(tmp_path):
  shared, only_a = "teacher:xresnet1d101:128:250:12:float32", "baseline:fcn_wang:8:250:1:float32"
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  a.write_text(
    json.dumps(_fake_record(shared, 100.0, 2**20)) + "\n" + json.dumps(_fake_record(only_a, 5, 1))
  )
  b.write_text(json.dumps(_fake_record(shared, 250.0, 2**21)) + "\n")
  text = report.compare(str(a), str(b))
  row = next(line for line in text.splitlines() if line.startswith(f"| {shared} |"))
  # samples/s 2.5x, step time 0.4x, compile 1x, temp memory 2x, no peak memory.
  assert row == f"| {shared} | 1 | 2.50 | 0.40 | 1.00 | 2.00 | - |"
  assert only_a in text
  other = tmp_path / "other.jsonl"
  other.write_text(json.dumps(_fake_record("baseline:fcn_wang:16:250:1:float32", 1, 1)) + "\n")
  with pytest.raises(ValueError, match="share no measured case"):
    report.compare(str(a), str(other))


def test_peak_flops_table():
  assert core.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert core.peak_flops("NVIDIA H100 PCIe", "float32") == 51e12
  assert core.peak_flops("NVIDIA H200", "float32") == 67e12
  assert core.peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
  assert core.peak_flops("TPU v4", "bfloat16") == 275e12
  assert core.peak_flops("TPU v5 lite", "bfloat16") == 197e12
  assert core.peak_flops("TPU v5", "bfloat16") == 459e12
  assert core.peak_flops("TPU v5p", "bfloat16") == 459e12
  assert core.peak_flops("TPU v6 lite", "bfloat16") == 918e12
  assert core.peak_flops("TPU v6 lite", "float32") is None
  assert core.peak_flops("cpu", "float32") is None
  with pytest.raises(ValueError, match="unknown dtype"):
    core.peak_flops("TPU v4", "float16")


@pytest.mark.parametrize(
  "spec, message",
  [
    ("baseline:fcn_wang:8:250:1", "expected method:backbone"),
    ("distill:fcn_wang:8:250:1:float32", "unknown method"),
    ("baseline:fcn_wang:8:250:1:float16", "unknown dtype"),
    ("teacher:fcn_wang:8:250:1:float32", "12 for the teacher"),
    ("baseline:fcn_wang:eight:250:1:float32", "must be integers"),
  ],
)
def test_bad_cases_are_rejected(spec, message):
  with pytest.raises(ValueError, match=message):
    core.Case.parse(spec)


def test_torch_xresnet1d101_has_the_flax_parameter_count():
  pytest.importorskip("torch")
  from lead_kt.bench import torch_ref

  torch_count = torch_ref.trainable_count(torch_ref.build("xresnet1d101", 12, 5))
  assert torch_count == 1_872_261
  assert core.backbone_param_count("xresnet1d101", 12, 5, 250) == torch_count


def test_torch_mvkt_step_trains_and_updates_the_bank():
  torch = pytest.importorskip("torch")
  from lead_kt.bench import torch_ref

  case = core.Case.parse("mvkt:xresnet1d50:4:64:1:float32")
  batch = core.synthetic_batch(case, num_classes=5, num_train=32)
  step = torch_ref.make_step(
    "mvkt", "xresnet1d50", batch, 5, num_train=32, negatives=8, embed_hidden=16
  )
  bank = step.memory.student_bank.clone()
  first, seconds = torch_ref.measure(step, warmup=1, timed=1)
  assert first > 0 and len(seconds) == 1
  written = torch.from_numpy(batch["index"]).long()
  untouched = torch.ones(32, dtype=torch.bool)
  untouched[written] = False
  assert not torch.allclose(step.memory.student_bank[written], bank[written])
  assert torch.equal(step.memory.student_bank[untouched], bank[untouched])
  assert torch.allclose(step.memory.student_bank[written].norm(dim=1), torch.ones(4))
  assert step.num_params == core.backbone_param_count("xresnet1d50", 1, 5, 64)
  # MKD vanishes when the student agrees with the teacher.
  assert np.isclose(float(torch_ref.mkd_paper(torch.ones(2, 5), torch.ones(2, 5))), 0.0)


def test_torch_bfloat16_step_runs_under_autocast():
  torch = pytest.importorskip("torch")
  from lead_kt.bench import torch_ref

  case = core.Case.parse("baseline:fcn_wang:4:64:1:bfloat16")
  batch = core.synthetic_batch(case, num_classes=5, num_train=32)
  losses = {}
  for dtype in ("float32", "bfloat16"):
    torch.manual_seed(0)  # the same initial weights for both
    step = torch_ref.make_step("baseline", "fcn_wang", batch, 5, 32, 8, 0, dtype=dtype)
    losses[dtype] = float(step.run())
  assert np.isfinite(losses["bfloat16"])
  # Autocast rounds the convolutions to bfloat16: close to the float32 loss, not equal.
  assert losses["bfloat16"] != losses["float32"]
  assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=5e-2)
  with pytest.raises(ValueError, match="no dtype 'float16'"):
    torch_ref.make_step("baseline", "fcn_wang", batch, 5, 32, 8, 0, dtype="float16")


def test_bench_times_a_bfloat16_case_against_torch_in_bfloat16(tmp_path):
  pytest.importorskip("torch")
  cfg = _tiny_config()
  cfg.cases = ("baseline:fcn_wang:4:64:1:bfloat16",)
  cfg.backbone_kwargs = ml_collections.ConfigDict()  # the full fcn_wang: its twin's width
  cfg.pipeline.enabled = False
  cfg.torch.enabled, cfg.torch.compile = True, False
  (record,) = bench_cli.run(cfg, tmp_path / "bench.jsonl")
  assert record["status"] == "ok"
  figures = record["torch"]
  assert (figures["device"], figures["dtype"]) == ("cpu", "bfloat16")
  assert figures["eager"]["step_ms"]["n"] == 2 and figures["eager"]["samples_per_s"] > 0


def test_accelerator_variant_times_every_twinned_step_in_both_dtypes():
  cfg = bench_config.get_config("accelerator")
  cases = [core.Case.parse(spec) for spec in cfg.cases]
  specs = set(cfg.cases)
  assert len(specs) == len(cases)
  for dtype in core.DTYPES:
    for backbone in bench_config._BACKBONES:
      assert f"teacher:{backbone}:128:250:12:{dtype}" in specs
      assert f"baseline:{backbone}:32:1000:1:{dtype}" in specs
    for backbone in bench_config._MVKT_BACKBONES:
      assert f"mvkt:{backbone}:32:1000:1:{dtype}" in specs
    assert f"mvkt:fcn_wang:8:5000:1:{dtype}:net1d" in specs
  assert len(cases) == 2 * (
    2 * len(bench_config._BACKBONES) + len(bench_config._MVKT_BACKBONES) + 1
  )
  assert cfg.torch.enabled and cfg.torch.compile
  with pytest.raises(ValueError, match="known: quick, accelerator, twins"):
    bench_config.get_config("gpu")


def test_twins_variant_is_every_twinned_float32_step_without_scaling():
  cfg = bench_config.get_config("twins")
  accelerator_cases = map(core.Case.parse, bench_config.get_config("accelerator").cases)
  twinned_float32 = {
    case.spec for case in accelerator_cases if case.dtype == "float32" and not case.teacher
  }
  assert set(cfg.cases) == twinned_float32 and len(cfg.cases) == len(twinned_float32)
  assert len(cfg.cases) == 2 * len(bench_config._BACKBONES) + len(bench_config._MVKT_BACKBONES)
  assert cfg.torch.enabled and cfg.torch.compile
  assert not cfg.scaling.device_counts and not cfg.scaling.process_counts
