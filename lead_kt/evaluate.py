"""Scoring a finished run on a dataset without training it.

  python -m lead_kt.evaluate --workdir=RUN --out=DIR [--dataset NAME] [--data-dir DIR]
      [--manual-dir DIR] [--batch-size N]

RUN is a finished run: one that lead_kt trained (a transfer run's top directory or its
``student/``), or a teacher that ``lead_kt.convert`` made of PyTorch weights, which saw no
validation split and so has no scores of its own. Its best network is evaluated as the trainer
evaluates at the end of a run (``train._evaluate``: RUN's leads, windows, normalisation and
preprocessing contract) on the validation and the test split of ``--dataset`` (default: RUN's own;
``--data-dir`` and ``--manual-dir`` say where it is or is built, as ``data.data_dir`` and
``data.manual_dir`` do). Its classes and sampling rate must be RUN's.

DIR, new or empty, receives what lead_kt.report reads: ``results.json`` (test macro-AUC, Fmax,
ACC/precision/recall/F1 at per-class thresholds chosen on the validation split, 95% bootstrap
intervals; ``evaluated`` names RUN) and ``predictions/{validation,test}.npz``:

  python -m lead_kt.report --workdirs DIR runs/mvkt --out report/
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import jax
from absl import logging

from lead_kt import cli, compilation_cache, input_pipeline, predict, sharding, train


def evaluate(
  workdir: str | os.PathLike,
  out_dir: str | os.PathLike,
  dataset: str | None = None,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  batch_size: int | None = None,
  arguments: Sequence[str] = (),
) -> dict:
  """Writes the evaluation of RUN `workdir` on `dataset` (default: the run's) into the new or
  empty directory `out_dir`; returns its results. Raises CliError (a run that is not finished, a
  dataset that does not fit it, an output that cannot be written) or predict.RunDirError."""
  run_dir = cli.require_finished_run(predict.resolve_run_dir(workdir))
  with cli.output_directory(out_dir) as staging:
    predictor = predict.Predictor(run_dir)
    config = predictor.config
    for field, value in (("name", dataset), ("data_dir", data_dir), ("manual_dir", manual_dir)):
      if value is not None:
        config.data[field] = value
    if batch_size is not None:
      config.eval_batch_size = batch_size
    info = input_pipeline.dataset_info(config.data)
    run_results = json.loads((run_dir / cli.RESULTS_FILE).read_text())
    if list(info.class_names) != run_results["class_names"]:
      raise cli.CliError(
        f"{config.data.name} has the classes {', '.join(info.class_names)}; {run_dir} predicts "
        f"{', '.join(run_results['class_names'])}"
      )
    if info.sampling_rate != predictor.spec.fs:
      raise cli.CliError(
        f"{config.data.name} is sampled at {info.sampling_rate:g} Hz; {run_dir} at "
        f"{predictor.spec.fs:g} Hz: name the dataset at the run's rate"
      )
    val, test = score_splits(predictor, config, info, ("validation", "test"))
    results = {
      "method": run_results["method"],
      "dataset": config.data.name,
      "backbone": run_results["backbone"],
      "teacher_backbone": run_results.get("teacher_backbone"),
      "student_leads": run_results["student_leads"],
      "class_names": list(info.class_names),
      "split_sizes": dict(info.split_sizes),
      "sampling_rate": info.sampling_rate,
      "crop_len": info.crop_len,
      "eval_stride": info.eval_stride,
      **train._summaries(val, test, list(info.class_names)),
      "evaluated": {"run": str(run_dir.resolve()), "arguments": list(arguments)},
      "config": json.loads(config.to_json_best_effort()),
    }
    (staging / "predictions").mkdir()
    for split, outputs in (("validation", val), ("test", test)):
      (staging / "predictions" / f"{split}.npz").write_bytes(train.predictions_npz(outputs))
    (staging / cli.RESULTS_FILE).write_text(json.dumps(results, indent=2))
  return results


def score_splits(predictor, config, info, splits: Sequence[str]) -> list[train.SplitOutputs]:
  """The predictor's best network on each of `splits` of `config.data`, as the trainer evaluates
  at the end of a run (its normalisation, windows and aggregation)."""
  # Predictor has read this file: the call loads it (it fits and writes only a missing one).
  normalizer = input_pipeline.load_or_fit_normalizer(
    config.data, os.path.join(predictor.run_dir, "normalization.json")
  )
  mesh = sharding.make_mesh(config.mesh.model)
  params, state = jax.device_put((predictor.params, predictor.state), sharding.replicated(mesh))
  method = predictor.method
  predict_fn = jax.jit(method.predict)
  return [
    train._evaluate(
      predict_fn,
      method,
      config,
      info,
      normalizer,
      sharding.batch_sharding(mesh),
      params,
      state,
      split,
    )
    for split in splits
  ]


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.ArgumentParser(prog="python -m lead_kt.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished run directory")
  parser.add_argument("--out", required=True, help="new or empty directory for the evaluation")
  parser.add_argument("--dataset", help="the lead_kt dataset (default: the run's own)")
  parser.add_argument("--data-dir", help="where the dataset is or is built (data.data_dir)")
  parser.add_argument("--manual-dir", help="the raw records it is built of (data.manual_dir)")
  parser.add_argument("--batch-size", type=int, help="windows per evaluation batch")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore step at INFO.
  compilation_cache.enable()
  try:
    results = evaluate(
      args.workdir,
      args.out,
      args.dataset,
      args.data_dir,
      args.manual_dir,
      args.batch_size,
      sys.argv[1:] if argv is None else argv,
    )
  except (cli.CliError, predict.RunDirError, ValueError, OSError) as error:
    return cli.report(error)
  low, high = results["test"]["ci95"]["macro_auc"]
  print(
    f"{results['dataset']} test macro-AUC {results['test']['macro_auc']:.4f} "
    f"[{low:.4f}, {high:.4f}]; wrote {os.path.abspath(args.out)}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
