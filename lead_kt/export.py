"""Exporting a trained run's inference function for use without lead_kt.

python -m lead_kt.export --workdir=RUN --out DIR [--platforms cpu,cuda] [--no-onnx]

DIR must be new or empty: it is written beside itself and renamed into place at the end, so it holds
one run's complete export or nothing (a failed export leaves nothing behind). StableHLO needs the
base install (jax, and flatbuffers for `Exported.serialize`); ONNX needs jax2onnx, the `export`
extra (`pip install "lead_kt[export]"`). DIR receives:
- `model.stablehlo`: the function serialized with `jax.export` (StableHLO plus calling convention).
  Input float32 [b, window_length, L] raw windows in millivolts at the model's rate, leads in the
  contract's order; output float32 [b, C] per-window probabilities. The batch dimension b is
  symbolic; normalisation, lead placement and the sigmoid are inside. Running it needs jax only:
  `jax.export.deserialize(open(path, "rb").read()).call(windows)`.
- `model.onnx`: the same function as ONNX (opset 23, dynamic batch), converted with jax2onnx,
  for onnxruntime on phones and other edge devices. ONNX is the second format
  because it runs where Python and XLA do not (onnxruntime mobile/web, TensorRT, CoreML and TFLite
  converters take it) and the conversion needs only jax2onnx. TFLite directly (jax2tf) would need
  TensorFlow, which the project does not install. jax2onnx converts every registered backbone
  (outputs within 1e-5 of JAX's) except reslstm_tse: its flax `nn.RNN` builds the LSTM carry from
  the batch size, which jax2onnx cannot keep symbolic; export it with --no-onnx (StableHLO works).
  `to_onnx` works around jax2onnx's replacement of flax.linen's pooling functions.
- `contract.json`: what the caller must do around the function: leads, sampling rate, window length
  and stride, how to aggregate a record's windows (max or mean), the value to pad a record shorter
  than one window with (the normalisation mean per lead, i.e. 0 once normalised, as the pipeline
  pads), class names and per-class decision thresholds (chosen on validation).
  It does not describe what the run's dataset builder did to each record besides resampling, which
  the caller must repeat too: for a run trained on an icbeb2018 `_db6` config, denoise the record
  at 500 Hz before resampling (`data_builders.icbeb2018.preprocessing.wavelet_denoise`); for a
  `_20s` config, centre-crop or tile it to 20 s at the model's rate after resampling
  (`centre_crop_or_tile`); `lead_kt.predict.preprocess_as_dataset` does both.

`lead_kt.predict.Predictor` computes the same per-window function; tests/test_export.py checks that
both exported forms give its outputs on real records within 1e-4.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import logging

from lead_kt import cli, compilation_cache, predict
from lead_kt.models import layers

STABLEHLO_FILE = "model.stablehlo"
ONNX_FILE = "model.onnx"
CONTRACT_FILE = "contract.json"
ONNX_OPSET = 23


class OnnxExportError(RuntimeError):
  """jax2onnx cannot convert the run's network."""


def probabilities_fn(predictor: predict.Predictor):
  """windows float32 [b, window_length, L] (mV) -> float32 [b, C] probabilities, with the run's
  variables bound as constants."""
  logits = functools.partial(
    predict.window_logits, predictor.method, predictor.spec, predictor.params, predictor.state
  )
  return lambda windows: jax.nn.sigmoid(logits(windows))


def input_shape(spec: predict.ModelSpec) -> str:
  """The symbolic input shape, e.g. "b, 250, 1"."""
  return f"b, {spec.crop_len}, {len(spec.input_leads)}"


def export_stablehlo(predictor: predict.Predictor, platforms: Sequence[str] = ("cpu",)) -> bytes:
  """The serialized `jax.export.Exported` of `probabilities_fn` with a symbolic batch."""
  spec = predictor.spec
  windows = jax.ShapeDtypeStruct(jax.export.symbolic_shape(input_shape(spec)), jnp.float32)
  exported = jax.export.export(jax.jit(probabilities_fn(predictor)), platforms=tuple(platforms))(
    windows
  )
  return bytes(exported.serialize())


def export_onnx(predictor: predict.Predictor):
  """`probabilities_fn` as an ONNX ModelProto (input `windows` [B, window_length, L])."""
  spec = predictor.spec
  return to_onnx(probabilities_fn(predictor), ("B", spec.crop_len, len(spec.input_leads)))


def to_onnx(
  fn, input_shape: tuple, input_name: str = "windows", output_name: str = "probabilities"
):
  """jax2onnx.to_onnx of a one-input function, tracing flax.linen's own pooling functions.

  While it traces, jax2onnx 0.17 replaces flax.linen's `pool`/`max_pool`/`avg_pool`/`min_pool` with
  versions that take the window only as a keyword and the padding only as "SAME"/"VALID", which
  breaks the backbones that call `nn.max_pool(x, (3,), (2,), padding=[(1, 1)])` (xresnet,
  resnet1d34, inception1d, cnn_hannun). The originals are put back while `fn` is traced; they lower
  to reduce_window primitives, which jax2onnx converts. XLA:CPU's workarounds are left out
  (`layers.without_cpu_workarounds`): ONNX never runs on XLA.
  """
  import flax.linen
  import flax.linen.pooling
  import jax2onnx  # The export extra (lead_kt[export]): only this export needs it.

  pooling = [
    (module, name)
    for module in (flax.linen, flax.linen.pooling)
    for name in ("pool", "max_pool", "avg_pool", "min_pool")
    if hasattr(module, name)
  ]
  originals = [getattr(module, name) for module, name in pooling]

  def traced(x):
    replacements = [getattr(module, name) for module, name in pooling]
    for (module, name), original in zip(pooling, originals, strict=True):
      setattr(module, name, original)
    try:
      with layers.without_cpu_workarounds():
        return fn(x)
    finally:
      for (module, name), replacement in zip(pooling, replacements, strict=True):
        setattr(module, name, replacement)

  return jax2onnx.to_onnx(
    traced,
    inputs=[input_shape],
    model_name="lead_kt",
    opset=ONNX_OPSET,
    input_names=[input_name],
    output_names=[output_name],
  )


def contract(predictor: predict.Predictor, files: dict[str, str]) -> dict:
  """The input/output contract of the exported function (see the module docstring)."""
  spec = predictor.spec
  return {
    "source_run": os.path.abspath(predictor.run_dir),
    "method": spec.method,
    "backbone": predictor.config.student.backbone,
    "input": {
      "name": "windows",
      "shape": ["batch", spec.crop_len, len(spec.input_leads)],
      "dtype": "float32",
      "units": "mV",
      "leads": list(spec.input_leads),
      "sampling_rate_hz": spec.fs,
    },
    "output": {
      "name": "probabilities",
      "shape": ["batch", len(spec.class_names)],
      "dtype": "float32",
      "per": "window",
    },
    "window_length": spec.crop_len,
    "window_stride": spec.stride,
    # As lead_kt.data.windows.sliding_windows: evaluation and predict add the tail window.
    "tail_window": "aligned_to_end",
    "tail_window_description": (
      "a record of length samples gets windows starting at 0, window_stride, "
      "2 * window_stride, ... below length - window_length, then one starting at length - "
      "window_length, which ends at the record's last sample; a record shorter than "
      "window_length gets one window at 0, padded at its end with pad_value_mv"
    ),
    "window_aggregate": spec.aggregate,
    "pad_value_mv": spec.mean.tolist(),
    "class_names": list(spec.class_names),
    "thresholds": dict(zip(spec.class_names, spec.thresholds.tolist(), strict=True)),
    "files": files,
    "jax_version": jax.__version__,
  }


def _require(module: str, purpose: str, install: str) -> None:
  """Raises CliError saying what to install when `module` cannot be imported."""
  try:
    importlib.import_module(module)
  except ImportError as error:
    raise cli.CliError(f"{purpose} needs {module} ({error}): {install}") from error


def export(
  workdir: str | os.PathLike,
  out_dir: str | os.PathLike,
  platforms: Sequence[str] = ("cpu",),
  onnx: bool = True,
) -> dict:
  """Writes model.stablehlo, model.onnx (unless onnx=False) and contract.json to the new or empty
  directory `out_dir`, which appears complete or not at all; returns the contract. Raises CliError
  (a missing package, an unfinished run, an output that cannot be written) before any work."""
  _require("flatbuffers", "StableHLO export (jax's Exported.serialize)", "pip install flatbuffers")
  if onnx:
    _require("jax2onnx", "ONNX export", 'pip install "lead_kt[export]", or give --no-onnx')
  cli.require_finished_run(predict.resolve_run_dir(workdir))
  with cli.output_directory(out_dir) as staging:
    predictor = predict.Predictor(workdir)
    files = {"stablehlo": STABLEHLO_FILE}
    (staging / STABLEHLO_FILE).write_bytes(export_stablehlo(predictor, platforms))
    if onnx:
      try:
        model = export_onnx(predictor)
      except Exception as error:  # jax2onnx raises what its tracing and plugins raise.
        raise OnnxExportError(
          f"jax2onnx cannot convert the {predictor.config.student.backbone} network of "
          f"{predictor.run_dir} ({type(error).__name__}: {error}); --no-onnx exports StableHLO "
          "only"
        ) from error
      (staging / ONNX_FILE).write_bytes(model.SerializeToString())
      files["onnx"] = ONNX_FILE
    description = contract(predictor, files)
    (staging / CONTRACT_FILE).write_text(json.dumps(description, indent=2))
  return description


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.ArgumentParser(prog="python -m lead_kt.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished run directory")
  parser.add_argument("--out", required=True, help="new or empty directory for the exported files")
  parser.add_argument(
    "--platforms", default="cpu", help="comma-separated jax.export platforms (cpu, cuda, tpu)"
  )
  parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX file (--no_onnx too)")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore step at INFO.
  compilation_cache.enable()
  try:
    description = export(args.workdir, args.out, args.platforms.split(","), not args.no_onnx)
  except (predict.RunDirError, OnnxExportError, cli.CliError) as error:
    return cli.report(error)
  print(json.dumps(description["files"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
