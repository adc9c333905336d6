"""Inference speed of a trained run: ``lead_kt.predict`` on a folder of records, the network alone,
the exported StableHLO artefact, and the PyTorch twin of the same backbone.

  python -m lead_kt.bench.inference_speed --workdir=RUN --input=DIR [--records=N] [--batch=256]
      [--output=inference.json] [--torch_compile]

Four figures, each from this one invocation:

- ``predict``: records/s of ``Predictor.predict_record`` over the records found under ``--input``
  (at most ``--records``), reading, preprocessing, windowing, the network and aggregation
  included. The first pass (``cold``) pays for compiling each padded batch shape; the second
  (``warm``) is what a long-running service sees. ``load_s`` is the time to build the Predictor
  (results, normalisation, the best checkpoint).
- ``model``: windows/s of the run's network (``predict.window_logits``, normalisation included)
  on a fixed batch of ``--batch`` windows, jitted.
- ``stablehlo``: the same on the artefact ``lead_kt.export`` writes, serialized, read back and
  called through ``jax.export`` (what a user without lead_kt runs).
- ``torch``: the PyTorch twin of the backbone (``lead_kt.bench.torch_ref``, asserted to have the
  run's network's parameter count) with the run's trained weights copied in (``lead_kt.interop``),
  in eval mode under ``torch.inference_mode`` on the same batch, normalised; eager (and
  ``torch.compile`` with ``--torch_compile``). ``torch_max_abs_logit_diff`` says that it computes
  the run's logits; ``jax_over_torch_eager`` etc. are the ratios.

The three network timings take turns (``--rounds`` blocks of ``--timed`` calls each), so that the
machine's drift falls on every side. Figures are medians over calls, each waited for.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from lead_kt import compilation_cache, export, logger, predict
from lead_kt.bench import core


def time_calls(call: Callable[[], object], calls: int) -> list[float]:
  """Seconds of each of ``calls`` calls, each result waited for."""
  seconds = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(call())
    seconds.append(time.perf_counter() - start)
  return seconds


def predict_rates(predictor: predict.Predictor, paths: list[str]) -> dict:
  """Records/s of two passes of ``predict_files`` over ``paths`` (cold, then warm)."""
  figures = {"records": len(paths)}
  for name in ("cold", "warm"):
    start = time.perf_counter()
    rows = predict.predict_files(predictor, paths, progress=False)
    seconds = time.perf_counter() - start
    failed = [row for row in rows if row["error"]]
    if failed:
      raise ValueError(f"{len(failed)} of {len(rows)} records failed, e.g. {failed[0]['error']}")
    figures[name] = {"seconds": seconds, "records_per_s": len(paths) / seconds}
  return figures


def network_sides(
  predictor: predict.Predictor, windows: np.ndarray, torch_compile: bool
) -> tuple[dict, dict]:
  """name -> a call of the network on ``windows`` (its first call made: compiled, warmed up), and
  a ``notes`` entry for a side that cannot run."""
  device_windows = jax.device_put(windows)
  logits = predictor.jitted_logits
  sides = {"jax": lambda: logits(predictor.params, predictor.state, device_windows)}
  exported = jax.export.deserialize(bytearray(export.export_stablehlo(predictor)))
  artefact = jax.jit(exported.call)
  sides["stablehlo"] = lambda: artefact(device_windows)
  notes = {}
  try:
    sides.update(torch_sides(predictor, windows, torch_compile))
  except (ImportError, ValueError) as error:
    notes["torch"] = str(error)
  for call in sides.values():
    time_calls(call, 2)
  return sides, notes


def torch_sides(predictor: predict.Predictor, windows: np.ndarray, torch_compile: bool) -> dict:
  """The PyTorch twin of the run's backbone with the run's trained weights, eager (and compiled),
  in eval mode without autograd, on the normalised student leads of ``windows``."""
  import torch

  from lead_kt import interop, pretrained
  from lead_kt.bench import torch_ref
  from lead_kt.interop import own_twins

  config, spec = predictor.config, predictor.spec
  backbone = config.student.backbone
  if backbone not in torch_ref.BACKBONES:
    raise ValueError(f"no PyTorch twin of {backbone}")
  if config.student.get("kwargs"):
    raise ValueError(f"no PyTorch twin of {backbone} with {dict(config.student.kwargs)}")
  if config.method not in pretrained.NETWORK_KEYS:
    raise ValueError(f"the {config.method} network has no PyTorch twin")
  if not set(spec.student_leads) <= set(spec.input_leads):
    raise ValueError(f"the network reads leads {spec.student_leads} that are not its inputs")
  leads, classes = len(spec.student_leads), len(spec.class_names)
  twin = torch_ref.build(backbone, leads, classes).eval()
  variables = pretrained.network_variables(config.method, predictor.params, predictor.state)
  flax_count = core.param_count(variables["params"])
  twin_count = torch_ref.trainable_count(twin)
  if twin_count != flax_count:
    raise AssertionError(
      f"torch_ref {backbone} has {twin_count:,} parameters, the run {flax_count:,}"
    )
  if backbone in own_twins.BUILDERS:
    own_twins.load_flax(twin, variables)
  else:
    twin.load_state_dict(interop.to_torch(backbone, variables))
  normalised = (windows - spec.mean) * spec.inv_std
  columns = [spec.input_leads.index(lead) for lead in spec.student_leads]
  x = torch.from_numpy(np.ascontiguousarray(normalised[..., columns].transpose(0, 2, 1)))

  def runner(net):
    def call():
      with torch.inference_mode():
        return net(x)

    return call

  sides = {"torch_eager": runner(twin)}
  if torch_compile:
    sides["torch_compile"] = runner(torch.compile(twin))
  return sides


def measure(
  workdir: str,
  paths: list[str],
  batch: int,
  predict_batch: int,
  timed: int,
  rounds: int,
  torch_compile: bool = False,
) -> dict:
  """The JSON record of one run: predict, model, stablehlo, torch and their ratios."""
  start = time.perf_counter()
  predictor = predict.Predictor(workdir, batch_size=predict_batch)
  record = {
    "workdir": os.path.abspath(workdir),
    "method": predictor.config.method,
    "backbone": predictor.config.student.backbone,
    "input_leads": list(predictor.spec.input_leads),
    "window_length": predictor.spec.crop_len,
    "load_s": time.perf_counter() - start,
    **core.environment(),
  }
  record["predict"] = predict_rates(predictor, paths)
  rng = np.random.default_rng(0)
  shape = (batch, predictor.spec.crop_len, len(predictor.spec.input_leads))
  windows = rng.normal(size=shape).astype(np.float32)
  sides, notes = network_sides(predictor, windows, torch_compile)
  # The artefact timed is the network timed: its probabilities are the sigmoid of the logits.
  logits = np.asarray(sides["jax"]())
  record["stablehlo_max_abs_diff"] = float(
    np.abs(np.asarray(sides["stablehlo"]()) - jax.nn.sigmoid(logits)).max()
  )
  # The twin carries the run's weights: its logits are the network's.
  if "torch_eager" in sides:
    twin_logits = sides["torch_eager"]().numpy()
    record["torch_max_abs_logit_diff"] = float(np.abs(twin_logits - logits).max())
  seconds = {name: [] for name in sides}
  for calls in core.blocks(timed, rounds):
    for name, call in sides.items():
      seconds[name] += time_calls(call, calls)
  record["batch"] = batch
  record["notes"] = notes
  for name, times in seconds.items():
    median = statistics.median(times)
    record[name] = {"step_ms": core.step_summary(times), "windows_per_s": batch / median}
  for rival in ("stablehlo", "torch_eager", "torch_compile"):
    if rival in record:
      record[f"jax_over_{rival}"] = record["jax"]["windows_per_s"] / record[rival]["windows_per_s"]
  return record


def summary(record: dict) -> str:
  """A few Markdown lines of the record."""
  p = record["predict"]
  lines = [
    f"{record['method']} / {record['backbone']}, leads {','.join(record['input_leads'])}, "
    f"window {record['window_length']}: load {record['load_s']:.1f} s; predict on "
    f"{p['records']} records: cold {p['cold']['records_per_s']:.1f}, warm "
    f"{p['warm']['records_per_s']:.1f} records/s",
    "",
    f"| batch {record['batch']} | windows/s | median ms | JAX / this |",
    "|---|---|---|---|",
  ]
  for name in ("jax", "stablehlo", "torch_eager", "torch_compile"):
    if name in record:
      ratio = record.get(f"jax_over_{name}")
      lines.append(
        f"| {name} | {record[name]['windows_per_s']:,.0f} | "
        f"{record[name]['step_ms']['median']:.1f} | {'' if ratio is None else f'{ratio:.2f}'} |"
      )
  lines += [f"note ({name}): {note}" for name, note in record["notes"].items()]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished run directory")
  parser.add_argument("--input", required=True, help="a folder of records, or one record")
  parser.add_argument("--records", type=int, default=500, help="records for predict; 0: all")
  parser.add_argument("--batch", type=int, default=256, help="windows per call of the network")
  parser.add_argument("--predict_batch", type=int, default=64, help="Predictor's batch of windows")
  parser.add_argument("--timed", type=int, default=20, help="timed calls of each side in all")
  parser.add_argument("--rounds", type=int, default=5, help="blocks of timed calls, in turns")
  parser.add_argument("--torch_compile", action="store_true", help="also time torch.compile")
  parser.add_argument("--output", default="", help="write the record as JSON here too")
  args = parser.parse_args(argv)
  logger.quiet_library_logs()
  compilation_cache.enable()
  paths = predict.expand_inputs([args.input])
  if not paths:
    parser.error(f"--input {args.input}: no records found")
  if args.records:
    paths = paths[: args.records]
  record = measure(
    args.workdir,
    paths,
    args.batch,
    args.predict_batch,
    args.timed,
    args.rounds,
    args.torch_compile,
  )
  if args.output:
    with open(args.output, "w") as f:
      json.dump(record, f, indent=1)
  sys.stdout.write(summary(record))


if __name__ == "__main__":
  main()
