"""lead_kt.export: the StableHLO and ONNX files give the original's outputs on real records."""

import json
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import onnxruntime
import pytest
import run_fixture

from lead_kt import ecg_io, export, predict

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  run_dir = run_fixture.tiny_run()
  out_dir = tmp_path_factory.mktemp("export")
  assert export.main(["--workdir", run_dir, "--out", str(out_dir)]) == 0
  return out_dir, predict.Predictor(run_dir)


@pytest.fixture(scope="module")
def real_windows(exported):
  """Windows of three real records (PTB-XL 100 Hz, PTB-XL 500 Hz, CPSC2018) and the original's
  per-window probabilities."""
  _, predictor = exported
  records = [FIXTURES / "00001_lr", FIXTURES / "00001_hr", FIXTURES / "A1980.mat"]
  windows = np.concatenate([predictor.model_windows(ecg_io.read_record(path)) for path in records])
  original = 1.0 / (1.0 + np.exp(-predictor.window_logits(windows).astype(np.float64)))
  return windows, original


def test_stablehlo_runs_with_a_symbolic_batch_and_equals_the_original(exported, real_windows):
  out_dir, _ = exported
  windows, original = real_windows
  model = jax.export.deserialize((out_dir / export.STABLEHLO_FILE).read_bytes())
  assert str(model.in_avals[0].shape[0]) == "b"
  for rows in (slice(None), slice(0, 1), slice(5, 16)):  # Three batch sizes, one file.
    np.testing.assert_allclose(np.asarray(model.call(windows[rows])), original[rows], atol=1e-4)


def test_onnx_equals_the_original(exported, real_windows):
  out_dir, _ = exported
  windows, original = real_windows
  session = onnxruntime.InferenceSession(str(out_dir / export.ONNX_FILE))
  (model_input,) = session.get_inputs()
  assert model_input.name == "windows" and isinstance(model_input.shape[0], str)
  for rows in (slice(None), slice(2, 5)):
    (probabilities,) = session.run(None, {"windows": windows[rows]})
    np.testing.assert_allclose(probabilities, original[rows], atol=1e-4)


def test_contract_describes_the_input_and_the_decisions(exported):
  out_dir, predictor = exported
  contract = json.loads((out_dir / export.CONTRACT_FILE).read_text())
  spec = predictor.spec
  assert contract["input"]["leads"] == ["I"] and contract["input"]["sampling_rate_hz"] == 100.0
  assert contract["input"]["shape"] == ["batch", 250, 1] and contract["input"]["units"] == "mV"
  assert (contract["window_length"], contract["window_stride"]) == (250, 125)
  assert contract["window_aggregate"] == "max"
  assert contract["class_names"] == list(spec.class_names)
  assert list(contract["thresholds"].values()) == spec.thresholds.tolist()
  assert contract["pad_value_mv"] == spec.mean.tolist()
  assert contract["files"] == {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}


def test_stablehlo_file_needs_jax_alone(exported, real_windows):
  """A fresh interpreter without lead_kt loads and runs the exported file."""
  out_dir, _ = exported
  windows, original = real_windows
  np.save(out_dir / "windows.npy", windows[:4])
  script = textwrap.dedent(
    f"""
    import sys
    sys.path = [p for p in sys.path if p not in ("", ".", {str(pathlib.Path.cwd())!r})]
    import jax, numpy as np
    model = jax.export.deserialize(open({str(out_dir / export.STABLEHLO_FILE)!r}, "rb").read())
    out = np.asarray(model.call(np.load({str(out_dir / "windows.npy")!r})))
    assert not any(name.startswith("lead_kt") for name in sys.modules)
    np.save({str(out_dir / "standalone.npy")!r}, out)
    """
  )
  subprocess.run([sys.executable, "-c", script], check=True, cwd=out_dir)
  np.testing.assert_allclose(np.load(out_dir / "standalone.npy"), original[:4], atol=1e-4)


def test_onnx_conversion_keeps_linens_max_pool_with_positional_arguments():
  """The call form of xresnet/resnet/inception, which jax2onnx's own max_pool rejects."""
  import flax.linen as nn

  def pool(x):
    return nn.max_pool(x, (3,), (2,), padding=[(1, 1)]) + nn.avg_pool(x, (2,), (2,), [(0, 1)])

  x = np.random.default_rng(0).standard_normal((2, 9, 3)).astype(np.float32)
  session = onnxruntime.InferenceSession(export.to_onnx(pool, ("B", 9, 3)).SerializeToString())
  (out,) = session.run(None, {"windows": x})
  np.testing.assert_allclose(out, np.asarray(pool(x)), atol=1e-6)
  assert nn.max_pool.__module__ == "flax.linen.pooling"  # Put back after the conversion.


def _error_line(capsys) -> str:
  err = capsys.readouterr().err
  assert "Traceback" not in err
  (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
  return line


def test_an_existing_export_is_never_mixed_with_another(exported, capsys):
  """A second export into a folder that holds one is refused, and the folder keeps the first."""
  out_dir, _ = exported
  before = {path.name: path.read_bytes() for path in out_dir.iterdir()}
  argv = ["--workdir", run_fixture.tiny_run(), "--out", str(out_dir), "--no_onnx"]
  assert export.main(argv) == 2
  assert "exists and is not an empty directory" in _error_line(capsys)
  assert {path.name: path.read_bytes() for path in out_dir.iterdir()} == before


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch, capsys):
  def broken(predictor):
    raise RuntimeError("the converter broke")

  monkeypatch.setattr(export, "export_onnx", broken)
  out_dir = tmp_path / "exported"
  assert export.main(["--workdir", run_fixture.tiny_run(), "--out", str(out_dir)]) == 2
  assert "jax2onnx cannot convert the fcn_wang network" in _error_line(capsys)
  assert list(tmp_path.iterdir()) == []  # no model.stablehlo, no half-written folder


def test_without_flatbuffers_export_says_what_to_install_and_writes_nothing(
  tmp_path, monkeypatch, capsys
):
  monkeypatch.setitem(sys.modules, "flatbuffers", None)  # as after an install without it
  monkeypatch.delitem(sys.modules, "jax._src.export.serialization", raising=False)
  out_dir = tmp_path / "exported"
  assert export.main(["--workdir", run_fixture.tiny_run(), "--out", str(out_dir)]) == 2
  line = _error_line(capsys)
  assert "StableHLO export (jax's Exported.serialize) needs flatbuffers" in line
  assert line.endswith(": pip install flatbuffers")
  assert list(tmp_path.iterdir()) == []


def test_without_jax2onnx_export_names_the_extra_and_stablehlo_still_works(
  tmp_path, monkeypatch, capsys, real_windows
):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)
  run_dir = run_fixture.tiny_run()
  assert export.main(["--workdir", run_dir, "--out", str(tmp_path / "onnx")]) == 2
  line = _error_line(capsys)
  assert "ONNX export needs jax2onnx" in line
  assert line.endswith(': pip install "lead_kt[export]", or give --no-onnx')
  assert list(tmp_path.iterdir()) == []
  assert export.main(["--workdir", run_dir, "--out", str(tmp_path / "hlo"), "--no-onnx"]) == 0
  assert sorted(p.name for p in (tmp_path / "hlo").iterdir()) == [
    export.CONTRACT_FILE,
    export.STABLEHLO_FILE,
  ]
  windows, original = real_windows
  model = jax.export.deserialize((tmp_path / "hlo" / export.STABLEHLO_FILE).read_bytes())
  np.testing.assert_allclose(np.asarray(model.call(windows[:3])), original[:3], atol=1e-4)


def test_an_unfinished_or_missing_workdir_is_one_line(tmp_path, capsys):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  for workdir, message in (("run", "has not finished"), ("nowhere", "nowhere does not exist")):
    argv = ["--workdir", str(tmp_path / workdir), "--out", str(tmp_path / "out")]
    assert export.main(argv) == 2
    assert message in _error_line(capsys)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
  def no_work(workdir):
    raise AssertionError("the run was loaded before the output was checked")

  monkeypatch.setattr(predict, "Predictor", no_work)
  (tmp_path / "a_file").write_text("")
  out_dir = tmp_path / "a_file" / "exported"
  assert export.main(["--workdir", run_fixture.tiny_run(), "--out", str(out_dir)]) == 2
  assert _error_line(capsys) == (
    f"error: cannot write {out_dir}: {tmp_path / 'a_file'} is a file, not a directory"
  )
