"""An exported model run over ECG recordings through its contract.json alone.

python -m lead_kt.reference_runner --model DIR/FILE --input PATH [PATH ...]
    [--output out.csv|out.json] [--csv-fs HZ] [--micro]

FILE is one of the artefacts that `lead_kt.export` or `lead_kt.quantize` wrote into DIR
(model.stablehlo, model.onnx, model.tflite, model_int8.onnx, model_int8.tflite), and DIR's
contract.json says everything done around it. This module is the reference for a device's own code:
it uses no lead_kt model code (no network, no run directory, no normalisation statistics), only
lead_kt.ecg_io to read the recordings. For each record:

1. the contract's leads are taken (by name, any spelling) and resampled to its rate (polyphase);
2. a record shorter than one window is padded at its end with `pad_value_mv`;
3. windows of `window_length` samples start every `window_stride` samples, plus a last one that
   ends at the record's end (`tail_window`: aligned_to_end);
4. a model with an int8 input gets q = clip(round(x / scale + zero_point), -128, 127) of each
   window x in mV, with the scale and (possibly fractional) zero point of each lead (the
   artefact's `input` in the contract); its int8 output is read back as (q - zero_point) * scale;
5. the windows' probabilities are aggregated (`window_aggregate`: max or mean) and compared with
   the per-class `thresholds`.

Runtimes: StableHLO with jax, ONNX with onnxruntime, TFLite with LiteRT's interpreter
(ai-edge-litert) or, with --micro, the TFLite-Micro interpreter (the `tflite-micro` package; the
microcontroller's kernels, compiled for this CPU). tests/test_quantize.py checks that its outputs
equal `lead_kt.predict`'s on real records.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from lead_kt import ecg_io

CONTRACT_FILE = "contract.json"
# What a file without an `artefacts` entry in its contract (a plain lead_kt.export) takes and gives.
_FLOAT_ARTEFACT = {"input": {"dtype": "float32"}, "output": {"dtype": "float32"}}
_INT8 = np.iinfo(np.int8)


def load_contract(model_path: str | os.PathLike) -> dict:
  """The contract.json beside `model_path`."""
  path = os.path.join(os.path.dirname(os.path.abspath(model_path)), CONTRACT_FILE)
  with open(path) as contract_file:
    return json.load(contract_file)


def artefact_entry(contract: dict, file_name: str) -> dict:
  """The contract's description of the artefact `file_name`: `input`/`output` dtype (with `scale`
  and `zero_point` for int8) and `batch` (1, or "any")."""
  for entry in contract.get("artefacts", {}).values():
    if entry["file"] == file_name:
      return entry
  if file_name in contract["files"].values():
    return {"file": file_name, "batch": "any", **_FLOAT_ARTEFACT}
  raise ValueError(f"{file_name} is not one of the contract's files: {contract['files']}")


def quantize(x: np.ndarray, scale, zero_point) -> np.ndarray:
  """float -> int8 as the contract says: clip(round(x / scale + zero_point)); scale and zero point
  are numbers, or lists with one per lead (the last axis)."""
  q = np.round(x / np.asarray(scale, np.float64) + np.asarray(zero_point, np.float64))
  return np.clip(q, _INT8.min, _INT8.max).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
  return (q.astype(np.float32) - zero_point) * np.float32(scale)


class Model:
  """An exported artefact as a function: windows float32 [N, window_length, L] in mV ->
  probabilities float32 [N, C]. `threads` bounds the runtime's threads (None: its default);
  `micro` runs a .tflite file with the TFLite-Micro interpreter."""

  def __init__(
    self,
    path: str | os.PathLike,
    contract: dict | None = None,
    threads: int | None = None,
    micro: bool = False,
  ):
    self.path = os.fspath(path)
    self.contract = contract if contract is not None else load_contract(path)
    self.entry = artefact_entry(self.contract, os.path.basename(self.path))
    extension = os.path.splitext(self.path)[1]
    if micro and extension != ".tflite":
      raise ValueError(f"{self.path}: only a .tflite model runs on TFLite-Micro")
    openers = {".stablehlo": _stablehlo, ".onnx": _onnx, ".tflite": _micro if micro else _litert}
    if extension not in openers:
      raise ValueError(f"{self.path}: no runtime for {extension!r} files ({', '.join(openers)})")
    self._run = openers[extension](self.path, threads)

  def __call__(self, windows: np.ndarray) -> np.ndarray:
    spec_in, spec_out = self.entry["input"], self.entry["output"]
    x = np.asarray(windows, np.float32)
    if spec_in["dtype"] == "int8":
      x = quantize(x, spec_in["scale"], spec_in["zero_point"])
    if self.entry.get("batch", "any") == 1:
      y = np.concatenate([self._run(window[None]) for window in x])
    else:
      y = self._run(x)
    if spec_out["dtype"] == "int8":
      return dequantize(y, spec_out["scale"], spec_out["zero_point"])
    return np.asarray(y, np.float32)


def _stablehlo(path: str, threads: int | None):
  import jax

  with open(path, "rb") as model_file:
    exported = jax.export.deserialize(bytearray(model_file.read()))
  return lambda x: np.asarray(exported.call(x))


def _onnx(path: str, threads: int | None):
  import onnxruntime

  options = onnxruntime.SessionOptions()
  if threads:
    options.intra_op_num_threads = options.inter_op_num_threads = threads
  session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  (model_input,) = session.get_inputs()
  return lambda x: session.run(None, {model_input.name: x})[0]


def _litert(path: str, threads: int | None):
  from ai_edge_litert.interpreter import Interpreter

  interpreter = Interpreter(model_path=path, num_threads=threads)
  interpreter.allocate_tensors()
  (model_input,), (model_output,) = (
    interpreter.get_input_details(),
    interpreter.get_output_details(),
  )

  def run(x):
    interpreter.set_tensor(model_input["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(model_output["index"])

  return run


def _micro(path: str, threads: int | None):
  from tflite_micro.python.tflite_micro import runtime

  del threads  # TFLite-Micro runs on one thread.
  interpreter = runtime.Interpreter.from_file(path)

  def run(x):
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return interpreter.get_output(0)

  return run


def record_windows(signal: np.ndarray, fs: float, contract: dict) -> np.ndarray:
  """signal float [T, L] in mV at fs Hz, its columns the contract's leads -> the model's windows
  float32 [N, window_length, L] (steps 1 to 3 of the module docstring)."""
  signal = ecg_io.resample(signal, fs, contract["input"]["sampling_rate_hz"])
  length, stride = contract["window_length"], contract["window_stride"]
  if len(signal) < length:
    padding = np.broadcast_to(contract["pad_value_mv"], (length - len(signal), signal.shape[1]))
    signal = np.concatenate([signal, padding])
  last = len(signal) - length
  starts = list(range(0, last + 1, stride))
  if contract["tail_window"] == "aligned_to_end" and starts[-1] != last:
    starts.append(last)
  return np.stack([signal[start : start + length] for start in starts]).astype(np.float32)


def predict_record(model: Model, path: str, csv_fs: float | None = None) -> dict:
  """One record's `file`, `num_windows`, `probabilities` {class: p}, `decisions` {class: bool}."""
  contract = model.contract
  record = ecg_io.read_record(path, csv_fs=csv_fs)
  signal = ecg_io.select_leads(record, contract["input"]["leads"])
  windows = record_windows(signal, record.fs, contract)
  probabilities = model(windows).astype(np.float64)
  aggregate = {"max": np.max, "mean": np.mean}[contract["window_aggregate"]]
  record_probabilities = aggregate(probabilities, axis=0)
  names = contract["class_names"]
  return {
    "file": os.fspath(path),
    "num_windows": len(windows),
    "probabilities": dict(zip(names, record_probabilities.tolist(), strict=True)),
    "decisions": {
      name: bool(p >= contract["thresholds"][name])
      for name, p in zip(names, record_probabilities, strict=True)
    },
  }


def _write_csv(rows: list[dict], class_names: Sequence[str], out) -> None:
  writer = csv.writer(out)
  writer.writerow(
    ["file", "num_windows", *(f"p_{name}" for name in class_names), *class_names, "error"]
  )
  for row in rows:
    if row.get("error"):
      writer.writerow([row["file"], "", *[""] * (2 * len(class_names)), row["error"]])
      continue
    probabilities = [f"{row['probabilities'][name]:.6f}" for name in class_names]
    decisions = [int(row["decisions"][name]) for name in class_names]
    writer.writerow([row["file"], row["num_windows"], *probabilities, *decisions, ""])


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m lead_kt.reference_runner", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--model", required=True, help="an exported file beside its contract.json")
  parser.add_argument("--input", nargs="+", required=True, help="records or directories")
  parser.add_argument("--output", help="out.csv or out.json (default: CSV to stdout)")
  parser.add_argument("--csv-fs", "--csv_fs", type=float, help="sampling rate (Hz) of CSV inputs")
  parser.add_argument("--micro", action="store_true", help="run a .tflite file on TFLite-Micro")
  args = parser.parse_args(argv)
  try:
    model = Model(args.model, micro=args.micro)
  except (OSError, ValueError, KeyError) as error:
    print(f"error: {args.model}: {error}", file=sys.stderr)
    return 2
  paths = []
  for path in args.input:
    paths.extend(ecg_io.find_records(path) if os.path.isdir(path) else [path])
  rows = []
  for path in paths:
    try:
      rows.append(predict_record(model, path, args.csv_fs))
    except ecg_io.EcgReadError as error:
      print(f"error: {error}", file=sys.stderr)
      rows.append({"file": path, "error": str(error)})
  if args.output and args.output.lower().endswith(".json"):
    with open(args.output, "w") as out:
      json.dump(rows, out, indent=2)
  elif args.output:
    with open(args.output, "w", newline="") as out:
      _write_csv(rows, model.contract["class_names"], out)
  else:
    _write_csv(rows, model.contract["class_names"], sys.stdout)
  return 1 if not paths or any(row.get("error") for row in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
