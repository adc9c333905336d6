"""lead_kt.quantize and lead_kt.reference_runner: int8 models of a real run, run through their
contract alone, against predict on real records."""

import json
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import run_fixture

from lead_kt import ecg_io, predict, quantize, tflite_graph
from lead_kt import reference_runner as runner

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
# Real records: PTB-XL at 100 Hz and at 500 Hz (resampled), a 15 s CPSC2018 record.
RECORDS = [FIXTURES / "00001_lr", FIXTURES / "00001_hr", FIXTURES / "A1980.mat"]
# The stated tolerance: an int8 model's per-window probabilities differ from the float network's
# by at most this (the quantised output alone moves them by up to 1/512).
INT8_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
  """The tiny real run (fcn_wang, lead I) quantised through the command line."""
  run_dir = run_fixture.tiny_run()
  out_dir = tmp_path_factory.mktemp("quantize") / "out"
  arguments = ["--workdir", run_dir, "--out", str(out_dir), "--calibration-windows", "64"]
  assert quantize.main([*arguments, "--latency-runs", "2"]) == 0
  return out_dir, predict.Predictor(run_dir)


@pytest.fixture(scope="module")
def real_windows(quantized):
  """The records' windows as predict cuts them, and the run's float probabilities of each."""
  _, predictor = quantized
  windows = np.concatenate([predictor.model_windows(ecg_io.read_record(p)) for p in RECORDS])
  return windows, 1.0 / (1.0 + np.exp(-predictor.window_logits(windows).astype(np.float64)))


@pytest.mark.parametrize("file", ["model_int8.tflite", "model_int8.onnx"])
def test_int8_probabilities_are_within_the_tolerance_of_float(quantized, real_windows, file):
  out_dir, _ = quantized
  windows, original = real_windows
  probabilities = runner.Model(out_dir / file)(windows)
  assert probabilities.shape == original.shape
  np.testing.assert_allclose(probabilities, original, atol=INT8_TOLERANCE)


def test_tflite_micro_runs_the_int8_model(quantized, real_windows):
  """The microcontroller's int8 kernels: within the tolerance of float, and a few output steps
  from LiteRT's (other kernels, other rounding)."""
  out_dir, _ = quantized
  windows, original = real_windows
  micro = runner.Model(out_dir / "model_int8.tflite", micro=True)(windows[:3])
  litert = runner.Model(out_dir / "model_int8.tflite")(windows[:3])
  np.testing.assert_allclose(micro, original[:3], atol=INT8_TOLERANCE)
  np.testing.assert_allclose(micro, litert, atol=6 / 256)


@pytest.mark.parametrize("file", ["model.stablehlo", "model.onnx", "model.tflite"])
def test_reference_runner_equals_predict_on_float_artefacts(quantized, file):
  out_dir, predictor = quantized
  model = runner.Model(out_dir / file)
  for record in RECORDS:
    expected = predictor.predict_record(record)
    got = runner.predict_record(model, str(record))
    assert got["num_windows"] == expected["num_windows"]
    np.testing.assert_allclose(
      list(got["probabilities"].values()), list(expected["probabilities"].values()), atol=1e-5
    )
    assert got["decisions"] == expected["decisions"]


def test_contract_says_how_to_call_each_artefact(quantized):
  out_dir, predictor = quantized
  contract = json.loads((out_dir / "contract.json").read_text())
  spec = predictor.spec
  assert contract["input"]["leads"] == ["I"] and contract["input"]["sampling_rate_hz"] == 100.0
  assert (contract["window_length"], contract["window_stride"]) == (250, 125)
  assert contract["window_aggregate"] == "max"
  assert list(contract["thresholds"].values()) == spec.thresholds.tolist()
  assert contract["calibration"] == {
    "source": "the run's training split",
    "windows": 64,
    "seed": 0,
  }
  int8 = contract["artefacts"]["tflite_int8"]
  assert int8["file"] == "model_int8.tflite" and int8["batch"] == 1
  assert len(int8["input"]["scale"]) == len(int8["input"]["zero_point"]) == 1
  # The model reads the normalised window z = (x - mean) * inv_std as q = round(z / s) + z0 (its
  # input tensor's parameters); the contract gives the same q for x in mV.
  from ai_edge_litert.interpreter import Interpreter

  interpreter = Interpreter(model_path=str(out_dir / "model_int8.tflite"))
  s, z0 = interpreter.get_input_details()[0]["quantization"]
  x = np.linspace(-2, 2, 101)[:, None]
  expected = np.clip(np.round((x - spec.mean) * spec.inv_std / s) + z0, -128, 127)
  q = runner.quantize(x, int8["input"]["scale"], int8["input"]["zero_point"])
  assert q.dtype == np.int8 and np.abs(q - expected).max() <= 1
  assert np.mean(q == expected) > 0.95  # Rounding may differ where z / s is a half.
  for kind in ("stablehlo", "onnx", "tflite", "onnx_int8"):
    assert contract["artefacts"][kind]["input"] == {"dtype": "float32"}
  for entry in contract["artefacts"].values():
    assert (out_dir / entry["file"]).is_file()


def test_budget_counts_the_network(quantized):
  out_dir, _ = quantized
  budget = json.loads((out_dir / "budget.json").read_text())
  # fcn_wang over 250 samples of 1 lead: convolutions 8 x 1 -> 128, 5 x 128 -> 256, 3 x 256 -> 128
  # at each of 249 steps (PyTorch's padding of 3 for a kernel of 8); the head: 256 -> 128 -> 5.
  convolutions = 249 * (8 * 1 * 128 + 5 * 128 * 256 + 3 * 256 * 128)
  assert budget["macs_per_window"] == convolutions + 256 * 128 + 128 * 5
  weights = 8 * 128 + 5 * 128 * 256 + 3 * 256 * 128 + 256 * 128 + 128 * 5
  assert weights < budget["parameters"] < weights + 4_000  # biases and the folded BatchNorms
  files = budget["files"]
  assert files["model_int8.tflite"]["bytes"] < 0.3 * files["model.tflite"]["bytes"]
  # The largest activation ([250, 256] int8) and less than the float model's would need.
  assert 250 * 256 < budget["tflite_micro_arena_bytes"] < 4 * 250 * 256
  for file in ("model.onnx", "model.tflite", "model_int8.onnx", "model_int8.tflite"):
    assert files[file]["latency_ms"] > 0


def test_evaluation_scores_each_file_against_the_run(quantized, run_dir):
  out_dir, predictor = quantized
  contract = json.loads((out_dir / "contract.json").read_text())
  accuracy = quantize.evaluate(predictor, str(out_dir), contract)
  results = json.loads((pathlib.Path(run_dir) / "results.json").read_text())
  assert accuracy["reference"]["macro_auc"] == pytest.approx(results["test"]["macro_auc"])
  assert accuracy["records"] == results["split_sizes"]["test"]
  for file, entry in accuracy["files"].items():
    lower, upper = entry["macro_auc_difference_ci95"]
    assert lower <= entry["macro_auc_difference"] <= upper
    if "int8" in file:  # Windows beyond the 64 calibration windows' amplitude are clipped.
      assert entry["mean_window_probability_difference"] <= INT8_TOLERANCE / 2
    else:
      assert entry["max_window_probability_difference"] <= 1e-5


def test_reference_runner_needs_no_model_code(quantized, tmp_path):
  """A fresh interpreter runs the int8 model over a record without lead_kt's networks."""
  out_dir, _ = quantized
  output = tmp_path / "out.json"
  script = textwrap.dedent(
    f"""
    import sys
    from lead_kt import reference_runner
    code = reference_runner.main(
      ["--model", {str(out_dir / "model_int8.tflite")!r}, "--input", {str(RECORDS[0])!r},
       "--output", {str(output)!r}])
    loaded = [name for name in sys.modules if name.startswith(("flax", "lead_kt.models",
      "lead_kt.methods", "lead_kt.predict", "lead_kt.quantize"))]
    assert not loaded, loaded
    sys.exit(code)
    """
  )
  subprocess.run(
    [sys.executable, "-c", script], check=True, cwd=pathlib.Path(__file__).parent.parent
  )
  (row,) = json.loads(output.read_text())
  assert row["num_windows"] == 7 and set(row["probabilities"]) == set(row["decisions"])


def _lead_ii_csv(path: pathlib.Path) -> pathlib.Path:
  """PTB-XL record 1's lead II alone, as a CSV file (100 Hz)."""
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  column = record.signal[:, record.lead_names.index("II")]
  path.write_text("II\n" + "\n".join(f"{value:.4f}" for value in column) + "\n")
  return path


@pytest.mark.parametrize("case", ["empty", "wrong leads", "no windows"])
def test_a_bad_calibration_set_is_refused_before_any_file(case, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  arguments = {
    "empty": (["--calibration-records", str(empty)], "no records found"),
    "wrong leads": (
      ["--calibration-records", str(_lead_ii_csv(tmp_path / "ii.csv")), "--csv-fs", "100"],
      "lacks lead I",
    ),
    "no windows": (["--calibration-windows", "0"], "at least 1"),
  }
  extra, message = arguments[case]
  out_dir = tmp_path / "out"
  code = quantize.main(["--workdir", run_fixture.tiny_run(), "--out", str(out_dir), *extra])
  assert code == 2
  assert message in capsys.readouterr().err
  assert not out_dir.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "ii.csv"]  # no partial output


def test_an_output_directory_in_use_is_refused_before_any_work(tmp_path, capsys):
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  (out_dir / "notes.txt").write_text("mine")
  assert quantize.main(["--workdir", run_fixture.tiny_run(), "--out", str(out_dir)]) == 2
  assert "exists and is not an empty directory" in capsys.readouterr().err
  assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]
  assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_operation_tflite_cannot_express_is_named_with_the_backbone():
  def running_max(x):  # A 1-D reduce_window that no TFLite builtin expresses.
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 1), (1, 1, 1), "SAME")

  with pytest.raises(quantize.QuantizeError, match="STABLEHLO_REDUCE_WINDOW in the toy network"):
    quantize.to_tflite(running_max, (1, 16, 2), "the toy network")


def test_flax_max_pooling_converts_to_tflite_pooling_with_the_same_values():
  def pools(x):  # inception1d's pooling, and a strided one.
    same = nn.max_pool(x, (3,), (1,), padding=[(1, 1)])
    return jnp.concatenate([same, nn.max_pool(x, (3,), (2,), padding=[(1, 1)])], axis=1)

  x = np.random.default_rng(0).standard_normal((1, 16, 3)).astype(np.float32)
  model = quantize.to_tflite(pools, x.shape, "the pooling")
  assert "MAX_POOL_2D" in tflite_graph.operators(model)
  np.testing.assert_allclose(_run_tflite(model, x), np.asarray(pools(x)), atol=1e-6)


def _run_tflite(model: bytes, x: np.ndarray) -> np.ndarray:
  from ai_edge_litert.interpreter import Interpreter

  interpreter = Interpreter(model_content=model)
  interpreter.allocate_tensors()
  interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_graph_rewrites_fold_batch_norms_split_the_head_and_keep_the_function():
  rng = np.random.default_rng(0)
  kernels = [rng.standard_normal((k, 2, 4)).astype(np.float32) for k in (5, 3)]
  dense = rng.standard_normal((16, 3)).astype(np.float32)
  scale = rng.uniform(0.5, 2, 16).astype(np.float32)
  shift = rng.standard_normal(16).astype(np.float32)

  def network(x):
    dimensions = ("NWC", "WIO", "NWC")
    branches = [  # inception's: convolutions concatenated, then one BatchNorm
      jax.lax.conv_general_dilated(x, k, (1,), "SAME", dimension_numbers=dimensions)
      for k in kernels
    ]
    y = jax.nn.relu(jnp.concatenate(branches, axis=-1) * scale[:8] + shift[:8])
    # The benchmark head: max and mean pooling concatenated, a BatchNorm, a dense layer.
    pooled = jnp.concatenate([y.max(axis=1), y.mean(axis=1)], axis=-1) * scale - shift
    return pooled @ dense

  model = quantize.to_tflite(network, (1, 12, 2), "the network")
  folded = tflite_graph.fold_affine(model)
  split = tflite_graph.split_concatenated_dense(folded)
  assert {"MUL", "ADD", "SUB"} & set(tflite_graph.operators(model))
  assert not {"MUL", "ADD", "SUB"} & set(tflite_graph.operators(folded))
  assert len(folded) < len(model)  # the replaced weights are gone
  assert tflite_graph.operators(split).count("FULLY_CONNECTED") == 2
  assert tflite_graph.operators(split).count("CONCATENATION") == 1  # the branches' one
  x = rng.standard_normal((1, 12, 2)).astype(np.float32)
  for rewritten in (folded, split):
    np.testing.assert_allclose(_run_tflite(rewritten, x), network(x), rtol=1e-5, atol=1e-5)
