"""Int8 models of a trained run for wearables and phones, with what they cost.

python -m lead_kt.quantize --workdir=RUN --out DIR [--calibration-windows 1000] [--seed 0]
    [--calibration-records PATH ...] [--csv-fs HZ] [--no-onnx] [--evaluate] [--latency-runs 100]

The int8 sibling of `lead_kt.export`, sharing its contract. DIR must be new or empty; it appears
complete or not at all. It receives export's files (model.stablehlo, model.onnx, contract.json)
and:
- `model.tflite`: the same function (normalisation and sigmoid inside) as a float32 TFLite (LiteRT)
  model of one window: float32 [1, window_length, L] mV -> [1, C] probabilities. Converted from the
  StableHLO that jax.export traces, by litert-converter: no TensorFlow, no PyTorch (the `quantize`
  extra; docs/architecture.md says why this path). BatchNorms are folded into the layers next to
  them (`lead_kt.tflite_graph.fold_affine`).
- `model_int8.tflite`: that network fully integer (LiteRT's post-training quantizer): int8 input,
  int8 per-channel weights, int8 activations, int32 biases, int8 output; the head's dense layer
  over concatenated poolings is split per part first (`tflite_graph`). The run's normalisation
  lives in the input's quantisation: per lead, q = round(x / scale + zero_point) of x in mV, with
  the scale and the (fractional) zero point in contract.json. The TFLite-Micro interpreter runs it
  (checked on every export: the budget's arena).
- `model_int8.onnx`: model.onnx in int8 QDQ form (onnxruntime's static quantizer after its graph
  optimisation, which folds BatchNorm into the convolutions; per-channel int8 weights, int8
  activations), float32 input and output, any batch.
- `budget.json`, also printed (with accuracy.json's figures): parameters (the float32 constants
  of model.tflite), multiply-accumulates per window (convolutions and fully connected layers), the
  TFLite-Micro arena the int8 model needs (its peak activation memory plus the interpreter's own),
  each file's bytes and its latency per window on this CPU (one thread, batch 1, median of
  --latency-runs).
- `accuracy.json` (--evaluate): each file's macro-AUC on the run's test split against the run's
  own float network, with the paired bootstrap difference and its 95 % interval
  (lead_kt.metrics), and the largest and the mean per-window probability difference.
contract.json gains `artefacts` (per file: batch, input and output dtype, and scale and zero point
where int8) and `calibration`. `lead_kt.reference_runner` runs any of the files through the
contract alone.

Calibration: --calibration-windows windows (default 1000), drawn with --seed from all the
test-time windows of the run's training split (window_length, window_stride, a last window at each
record's end, a short record padded as predict pads it), cut from the records the run's dataset
stores, which are what predict's preprocessing makes of the raw recordings (tests/test_predict.py);
or, with --calibration-records, from those recordings through predict's own `model_windows`.

Refused before any file is written, with `error: ...` and exit status 2: an unfinished run, an
empty calibration set, one whose records lack a lead the model reads. An operation that TFLite,
its int8 quantizer or TFLite-Micro cannot run is named with the backbone; nothing is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lead_kt import (
  cli,
  compilation_cache,
  ecg_io,
  export,
  input_pipeline,
  metrics,
  predict,
  tflite_graph,
)
from lead_kt import reference_runner as runner
from lead_kt.data.windows import aggregate_windows, sliding_windows
from lead_kt.models import layers

TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
ONNX_INT8_FILE = "model_int8.onnx"
BUDGET_FILE = "budget.json"
ACCURACY_FILE = "accuracy.json"
DEFAULT_CALIBRATION_WINDOWS = 1000
# Operator codes of a converted model that no TFLite builtin kernel (and so no TFLite-Micro one)
# runs: StableHLO ops the converter could not legalise, custom and delegate ops.
_NOT_BUILTIN = ("STABLEHLO_", "CUSTOM", "DELEGATE")
_LARGEST_ARENA = 1 << 30
_ONNX_CALIBRATION_BATCH = 64


class QuantizeError(RuntimeError):
  """A format or its int8 quantizer cannot express the run's network."""


class CalibrationError(ValueError):
  """A calibration set that is empty or that the model cannot read."""


def split_windows(
  predictor: predict.Predictor, split: str, count: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The test-time windows of a split of the run's dataset, as predict cuts them from a record:
  (windows float32 [N, window_length, L] in mV, their record int64 [N], the split's labels
  float32 [n, C]). With `count`, that many windows drawn with `seed` (in record order)."""
  spec = predictor.spec
  data = ml_collections.ConfigDict(predictor.config.data.to_dict())
  data.worker_count = 1  # Read only the records the windows come from.
  records = input_pipeline.load_split(data, split)
  record, start = sliding_windows(records.lengths, spec.crop_len, spec.stride)
  if count is not None and count < len(start):
    chosen = np.sort(np.random.default_rng(seed).choice(len(start), count, replace=False))
    record, start = record[chosen], start[chosen]
  crops, valid = records.crops(record, start, spec.crop_len)
  columns = [ecg_io.STANDARD_LEADS.index(lead) for lead in spec.input_leads]
  # Past a record's end predict pads with the normalisation mean (0 once normalised).
  windows = np.where(valid[..., None], crops[..., columns], spec.mean)
  return windows.astype(np.float32), record, records.labels


def calibration_windows(
  predictor: predict.Predictor,
  count: int = DEFAULT_CALIBRATION_WINDOWS,
  seed: int = 0,
  records: Sequence[str] = (),
  csv_fs: float | None = None,
) -> np.ndarray:
  """float32 [n, window_length, L] windows in mV to calibrate the int8 models with: `count` drawn
  with `seed` from the run's training split, or from `records` (files or directories) when given.
  Raises CalibrationError for an empty set or records the model cannot read."""
  if count < 1:
    raise CalibrationError(f"--calibration-windows must be at least 1, got {count}")
  if records:
    paths = predict.expand_inputs(records)
    if not paths:
      raise CalibrationError(f"calibration set: no records found in {', '.join(records)}")
    windows = []
    for path in paths:
      try:
        windows.append(predictor.model_windows(ecg_io.read_record(path, csv_fs=csv_fs)))
      except ecg_io.EcgReadError as error:
        raise CalibrationError(f"calibration set refused: {error}") from error
    windows = np.concatenate(windows)
    if count < len(windows):
      windows = windows[np.sort(np.random.default_rng(seed).choice(len(windows), count, False))]
    return windows
  try:
    windows, _, _ = split_windows(predictor, "train", count, seed)
  except (OSError, ValueError) as error:
    raise CalibrationError(
      f"cannot read the training split of {predictor.run_dir} ({cli.one_line(error)}); "
      "give recordings with --calibration-records"
    ) from error
  if not len(windows):
    raise CalibrationError(f"the training split of {predictor.run_dir} has no windows")
  return windows


@contextlib.contextmanager
def _pooling_as_images():
  """flax.linen's 1-D pooling traced as 2-D pooling over [B, 1, T, C].

  litert-converter turns a 4-D reduce_window into MAX_POOL_2D or AVERAGE_POOL_2D, which the int8
  quantizer and TFLite-Micro know, but leaves a 3-D one as STABLEHLO_REDUCE_WINDOW, which neither
  does. A max-pool's explicit padding becomes copies of the edge samples: each window still holds
  a real sample, so the maximum is flax's (whose -inf padding would give calibration an infinite
  range).
  """
  import flax.linen.pooling as pooling

  original = pooling.pool

  def pool(inputs, init, reduce_fn, window_shape, strides, padding):
    if inputs.ndim != 3 or len(window_shape) != 1:
      return original(inputs, init, reduce_fn, window_shape, strides, padding)
    if not isinstance(padding, str):
      ((low, high),) = padding
      if reduce_fn is jax.lax.max and max(low, high) < window_shape[0]:
        edges = [jnp.repeat(inputs[:, :1], low, 1), inputs, jnp.repeat(inputs[:, -1:], high, 1)]
        inputs, padding = jnp.concatenate(edges, axis=1), "VALID"
      else:
        padding = [(0, 0), (low, high)]
    strides = (1, *(strides or (1,)))
    return original(inputs[:, None], init, reduce_fn, (1, *window_shape), strides, padding)[:, 0]

  pooling.pool = pool
  try:
    yield
  finally:
    pooling.pool = original


def to_tflite(fn, input_shape: tuple[int, ...], name: str) -> bytes:
  """A float32 TFLite flatbuffer of the one-input function `fn` (input `windows` of the static
  `input_shape`, output `probabilities`), from its StableHLO by litert-converter. `name` says
  whose network it is in errors; a network with an operation no TFLite builtin runs raises
  QuantizeError naming it."""
  from litert_converter.mlir import ir, passmanager
  from litert_converter.mlir._mlir_libs import converter_api_ext

  with _pooling_as_images(), layers.without_cpu_workarounds():
    windows = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    stablehlo = jax.export.export(jax.jit(fn))(windows).mlir_module()
  context = ir.Context()
  converter_api_ext.prepare_mlir_context(context)
  try:
    with context:
      module = ir.Module.parse(stablehlo)
      converter_api_ext.set_signature(
        module.operation,
        signature_name="serving_default",
        input_names=["windows"],
        output_names=["probabilities"],
      )
      config = converter_api_ext.ConvertToTFLConfig()
      converter_api_ext.run_convert_to_tfl_passes(module, passmanager.PassManager(), config)
      model = bytes(converter_api_ext.export_flatbuffer_to_bytes(module.operation))
  except Exception as error:  # MLIR raises its own diagnostics types.
    raise QuantizeError(
      f"litert-converter cannot convert {name} to TFLite: {cli.one_line(error)}"
    ) from error
  unsupported = sorted({op for op in tflite_graph.operators(model) if op.startswith(_NOT_BUILTIN)})
  if unsupported:
    raise QuantizeError(
      f"TFLite has no builtin operation for {', '.join(unsupported)} in {name}: neither the int8 "
      "quantizer nor TFLite-Micro can run it"
    )
  return model


@contextlib.contextmanager
def _captured_stderr():
  """Collects what C code writes to the process's stderr (TFLite-Micro's allocation and kernel
  messages) into the yielded list, as one string, instead of printing it."""
  captured: list[str] = []
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield captured
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      sink.seek(0)
      captured.append(sink.read().decode(errors="replace"))


def micro_arena_bytes(model: bytes, name: str) -> int:
  """The tensor arena (bytes) that TFLite-Micro allocates for the model: its activations at their
  peak plus the interpreter's own records, as its recording allocator reports them. Raises
  QuantizeError with TFLite-Micro's message (e.g. an operation it lacks) when it cannot prepare
  the model in 1 GiB. (Searching for the smallest arena that works is no way: TFLite-Micro can
  crash on an arena too small, rather than fail.)"""
  from tflite_micro.python.tflite_micro import runtime

  size = 1 << 24
  while True:
    with _captured_stderr() as captured:
      try:
        runtime.Interpreter.from_bytes(model, arena_size=size).print_allocations()
        prepared = True
      except RuntimeError:
        prepared = False
    report = "".join(captured)
    if prepared:
      return int(re.search(r"Arena allocation total (\d+) bytes", report)[1])
    if size >= _LARGEST_ARENA:
      detail = "; ".join(line.strip() for line in report.splitlines() if line.strip())
      raise QuantizeError(f"TFLite-Micro cannot run the int8 model of {name}: {detail}")
    size *= 2


def quantize_tflite(model: bytes, windows: np.ndarray, name: str) -> bytes:
  """The fully integer version of a float TFLite model of one window (int8 input, output,
  weights and activations, int32 biases), its ranges calibrated on `windows`."""
  from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration

  calibrator = calibration.CalibrationWrapper(model, [], [])
  calibrator.Prepare([[1, *windows.shape[1:]]])
  for window in windows:
    calibrator.FeedTensor([window[None]])
  int8, int32 = np.dtype(np.int8).num, np.dtype(np.int32).num
  try:
    # Input, output, float fallback, activations, biases, per-tensor weights, per-tensor dense.
    return bytes(calibrator.QuantizeModel(int8, int8, False, int8, int32, False, False))
  except RuntimeError as error:
    raise QuantizeError(
      f"LiteRT's int8 quantizer cannot quantize {name}: {cli.one_line(error)}"
    ) from error


def quantize_onnx(model_path: str, out_path: str, windows: np.ndarray) -> None:
  """Writes the int8 QDQ version of the float ONNX model at `model_path` to `out_path`: graph
  optimised first (constants folded, BatchNorm folded into convolutions), weights per channel,
  activations per tensor, ranges calibrated (min/max) on `windows`."""
  from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
  )
  from onnxruntime.quantization.shape_inference import quant_pre_process

  class Reader(CalibrationDataReader):
    def __init__(self):
      self.batches = iter(np.array_split(windows, -(-len(windows) // _ONNX_CALIBRATION_BATCH)))

    def get_next(self):
      batch = next(self.batches, None)
      return None if batch is None else {"windows": batch}

  with tempfile.TemporaryDirectory() as scratch:
    optimized = os.path.join(scratch, "optimized.onnx")
    # jax2onnx's shape arithmetic for the symbolic batch defeats the symbolic shape inference.
    quant_pre_process(model_path, optimized, skip_symbolic_shape=True)
    quantize_static(
      optimized,
      out_path,
      Reader(),
      quant_format=QuantFormat.QDQ,
      per_channel=True,
      activation_type=QuantType.QInt8,
      weight_type=QuantType.QInt8,
    )


def int8_tflite(predictor: predict.Predictor, windows: np.ndarray, name: str) -> tuple[bytes, dict]:
  """The fully integer TFLite model of the run's network and its contract `input`/`output`.

  The run's normalisation is taken out of the graph and into the input's quantisation: the model
  reads int8 q of the normalised window z = (x - mean) * inv_std, q = round(z / s) + z0, so its
  first layer sees the signal at the input's full precision (a quantised subtraction and
  multiplication before it had rounded the signal to a quarter of that). For the caller, that is
  q = round(x / scale + zero_point) per lead in mV, with scale = s / inv_std and the fractional
  zero_point = z0 - mean / scale.
  """
  from ai_edge_litert.interpreter import Interpreter

  spec = predictor.spec
  unit = dataclasses.replace(
    spec, mean=np.zeros_like(spec.mean), inv_std=np.ones_like(spec.inv_std)
  )
  logits = functools.partial(
    predict.window_logits, predictor.method, unit, predictor.params, predictor.state
  )
  shape = (1, spec.crop_len, len(spec.input_leads))
  model = to_tflite(lambda z: jax.nn.sigmoid(logits(z)), shape, name)
  model = tflite_graph.split_concatenated_dense(tflite_graph.fold_affine(model))
  normalized = ((windows - spec.mean) * spec.inv_std).astype(np.float32)
  model = quantize_tflite(model, normalized, name)
  interpreter = Interpreter(model_content=model)
  scale, zero_point = interpreter.get_input_details()[0]["quantization"]
  out_scale, out_zero_point = interpreter.get_output_details()[0]["quantization"]
  lead_scale = scale / spec.inv_std.astype(np.float64)
  return model, {
    "input": {
      "dtype": "int8",
      "scale": lead_scale.tolist(),
      "zero_point": (zero_point - spec.mean / lead_scale).tolist(),
      "per": "lead",
    },
    "output": {"dtype": "int8", "scale": float(out_scale), "zero_point": int(out_zero_point)},
  }


def artefacts(files: dict[str, str], int8_io: dict) -> dict:
  """contract.json's `artefacts`: how each file is called."""
  float_io = {"input": {"dtype": "float32"}, "output": {"dtype": "float32"}}
  entries = {
    "stablehlo": {"batch": "any", **float_io},
    "onnx": {"batch": "any", **float_io},
    "onnx_int8": {"batch": "any", **float_io},
    "tflite": {"batch": 1, **float_io},
    "tflite_int8": {"batch": 1, **int8_io},
  }
  return {kind: {"file": file, **entries[kind]} for kind, file in files.items()}


def _median_ms(fn, window: np.ndarray, runs: int) -> float:
  fn(window)  # Warm-up: first-call allocations and compilation.
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn(window)
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def budget(out_dir: str, contract: dict, name: str, window: np.ndarray, runs: int) -> dict:
  """budget.json: what the models cost (module docstring); `window` [1, window_length, L] mV is
  what the latencies are measured on."""
  with open(os.path.join(out_dir, TFLITE_FILE), "rb") as model_file:
    float_tflite = model_file.read()
  with open(os.path.join(out_dir, TFLITE_INT8_FILE), "rb") as model_file:
    int8_tflite = model_file.read()
  files = {}
  for kind, entry in contract["artefacts"].items():
    path = os.path.join(out_dir, entry["file"])
    files[entry["file"]] = {"bytes": os.path.getsize(path)}
    if kind != "stablehlo":  # Latency of the portable formats; StableHLO runs where jax does.
      model = runner.Model(path, contract, threads=1)
      files[entry["file"]]["latency_ms"] = _median_ms(model, window, runs)
  micro = runner.Model(os.path.join(out_dir, TFLITE_INT8_FILE), contract, micro=True)
  files[TFLITE_INT8_FILE]["tflite_micro_latency_ms"] = _median_ms(micro, window, max(runs // 10, 1))
  return {
    "backbone": contract["backbone"],
    "window": {
      "samples": contract["window_length"],
      "leads": len(contract["input"]["leads"]),
      "sampling_rate_hz": contract["input"]["sampling_rate_hz"],
    },
    "parameters": tflite_graph.float_parameters(float_tflite),
    "macs_per_window": tflite_graph.multiply_accumulates(float_tflite),
    "tflite_micro_arena_bytes": micro_arena_bytes(int8_tflite, name),
    "int8_tflite_bytes_over_float_tflite": files[TFLITE_INT8_FILE]["bytes"] / len(float_tflite),
    "latency": {
      "per": "window (batch 1), median",
      "runs": runs,
      "threads": 1,
      "cpu": platform.processor() or platform.machine(),
      "runtimes": "onnxruntime (.onnx), LiteRT interpreter (.tflite), TFLite-Micro on this CPU "
      "(tflite_micro_latency_ms, reference kernels, a tenth of the runs)",
    },
    "files": files,
  }


def evaluate(predictor: predict.Predictor, out_dir: str, contract: dict) -> dict:
  """accuracy.json: each file against the run's own float network on the test split."""
  spec = predictor.spec
  windows, record, labels = split_windows(predictor, "test")
  reference = 1.0 / (1.0 + np.exp(-predictor.window_logits(windows).astype(np.float64)))
  ones = np.ones(len(windows))

  def per_record(probabilities):
    return aggregate_windows(probabilities, record, ones, len(labels), spec.aggregate)

  float_scores = per_record(reference)
  names = list(spec.class_names)
  auc = metrics.evaluate_split(float_scores, labels, names)["macro_auc"]
  result = {
    "split": "test",
    "records": len(labels),
    "windows": len(windows),
    "reference": {"what": "the run's float32 network (lead_kt.predict)", "macro_auc": auc},
    "files": {},
  }
  for entry in contract["artefacts"].values():
    probabilities = runner.Model(os.path.join(out_dir, entry["file"]), contract)(windows)
    scores = per_record(probabilities)
    paired = metrics.paired_bootstrap(
      scores, spec.thresholds, float_scores, spec.thresholds, labels, names
    )
    result["files"][entry["file"]] = {
      "macro_auc": metrics.evaluate_split(scores, labels, names)["macro_auc"],
      "macro_auc_difference": paired["difference"]["macro_auc"],
      "macro_auc_difference_ci95": paired["ci95"]["macro_auc"],
      "max_window_probability_difference": float(np.abs(probabilities - reference).max()),
      "mean_window_probability_difference": float(np.abs(probabilities - reference).mean()),
    }
  return result


def quantize(
  workdir: str | os.PathLike,
  out_dir: str | os.PathLike,
  calibration_count: int = DEFAULT_CALIBRATION_WINDOWS,
  seed: int = 0,
  calibration_records: Sequence[str] = (),
  csv_fs: float | None = None,
  onnx: bool = True,
  with_accuracy: bool = False,
  latency_runs: int = 100,
) -> dict:
  """Writes export's files, the int8 models, budget.json (and accuracy.json) to the new or empty
  directory `out_dir` (module docstring); returns the budget and the accuracy (None without
  `with_accuracy`). `out_dir` is checked first; nothing is written before the calibration set is
  read and the network converted."""
  cli.require_finished_run(predict.resolve_run_dir(workdir))
  with cli.output_directory(out_dir) as staging:
    predictor = predict.Predictor(workdir)
    name = f"the {predictor.config.student.backbone} network of {predictor.run_dir}"
    windows = calibration_windows(predictor, calibration_count, seed, calibration_records, csv_fs)
    spec = predictor.spec
    shape = (1, spec.crop_len, len(spec.input_leads))
    float_tflite = tflite_graph.fold_affine(
      to_tflite(export.probabilities_fn(predictor), shape, name)
    )
    int8_model, int8_io = int8_tflite(predictor, windows, name)
    description = export.export(workdir, staging, onnx=onnx)
    files = dict(description["files"], tflite=TFLITE_FILE, tflite_int8=TFLITE_INT8_FILE)
    (staging / TFLITE_FILE).write_bytes(float_tflite)
    (staging / TFLITE_INT8_FILE).write_bytes(int8_model)
    if onnx:
      quantize_onnx(str(staging / export.ONNX_FILE), str(staging / ONNX_INT8_FILE), windows)
      files["onnx_int8"] = ONNX_INT8_FILE
    description["files"] = files
    description["artefacts"] = artefacts(files, int8_io)
    description["calibration"] = {
      "source": list(calibration_records) or "the run's training split",
      "windows": len(windows),
      "seed": seed,
    }
    (staging / export.CONTRACT_FILE).write_text(json.dumps(description, indent=2))
    report = budget(str(staging), description, name, windows[:1], latency_runs)
    (staging / BUDGET_FILE).write_text(json.dumps(report, indent=2))
    accuracy = evaluate(predictor, str(staging), description) if with_accuracy else None
    if accuracy is not None:
      (staging / ACCURACY_FILE).write_text(json.dumps(accuracy, indent=2))
  return report, accuracy


def summary(report: dict, accuracy: dict | None) -> str:
  """The budget (and the accuracy) as a few lines of text."""
  lines = [
    f"{report['backbone']}: {report['parameters']:,} parameters, "
    f"{report['macs_per_window']:,} MACs per window, TFLite-Micro arena "
    f"{report['tflite_micro_arena_bytes']:,} bytes",
    f"{'file':<20}{'bytes':>12}{'ms/window':>12}",
  ]
  for file, entry in report["files"].items():
    latency = f"{entry['latency_ms']:.3f}" if "latency_ms" in entry else "-"
    lines.append(f"{file:<20}{entry['bytes']:>12,}{latency:>12}")
    if "tflite_micro_latency_ms" in entry:
      lines.append(f"{'  on TFLite-Micro':<32}{entry['tflite_micro_latency_ms']:>12.3f}")
  if accuracy is not None:
    lines.append(
      f"test macro-AUC of the float network {accuracy['reference']['macro_auc']:.4f} "
      f"({accuracy['records']} records); difference [95 % interval], largest window difference:"
    )
    for file, entry in accuracy["files"].items():
      lower, upper = entry["macro_auc_difference_ci95"]
      lines.append(
        f"{file:<20}{entry['macro_auc_difference']:+.4f} [{lower:+.4f}, {upper:+.4f}]"
        f"  {entry['max_window_probability_difference']:.3f}"
      )
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.ArgumentParser(prog="python -m lead_kt.quantize", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished run directory")
  parser.add_argument("--out", required=True, help="new or empty directory for the files")
  parser.add_argument(
    "--calibration-windows",
    type=int,
    default=DEFAULT_CALIBRATION_WINDOWS,
    help="how many windows calibrate the int8 ranges",
  )
  parser.add_argument("--seed", type=int, default=0, help="which calibration windows are drawn")
  parser.add_argument(
    "--calibration-records",
    nargs="+",
    default=(),
    help="recordings (files or directories) to calibrate on instead of the training split",
  )
  parser.add_argument("--csv-fs", type=float, help="sampling rate (Hz) of CSV recordings")
  parser.add_argument("--no-onnx", action="store_true", help="skip both ONNX files")
  parser.add_argument("--evaluate", action="store_true", help="write accuracy.json (test split)")
  parser.add_argument("--latency-runs", type=int, default=100, help="timed calls per file")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore step at INFO.
  compilation_cache.enable()
  try:
    report, accuracy = quantize(
      args.workdir,
      args.out,
      args.calibration_windows,
      args.seed,
      args.calibration_records,
      args.csv_fs,
      not args.no_onnx,
      args.evaluate,
      args.latency_runs,
    )
  except (
    predict.RunDirError,
    export.OnnxExportError,
    cli.CliError,
    CalibrationError,
    QuantizeError,
  ) as error:
    return cli.report(error)
  print(summary(report, accuracy))
  return 0


if __name__ == "__main__":
  sys.exit(main())
