"""Why does a transfer run help or not? Measurements on a finished MVKT or KD run's best checkpoint.

  python -m lead_kt.diagnose --workdir=runs/ablations/mvkt/seed_0 [--batches=16]

WORKDIR is a finished MVKT or KD run (for MVKT: its top directory or its ``student/``). Writes
``diagnostics.json`` into the student run, once everything is measured, and prints it; nothing else
is written. A workdir that does not exist, has not finished or is not an MVKT or KD run is one line
``error: ...`` (exit status 2).

- ``gradient``: on ``--batches`` training batches (train mode, augmented and mixed as the step
  sees them), the norm of each weighted loss term's gradient over the student backbone (MVKT:
  label_weight * BCE, alpha * MKD, beta * CLT; KD: label_weight * BCE, kd_weight * KD and the
  variant's feature term), each term's share of their sum, and the cosine between the BCE
  gradient and each transfer term's (``cos_bce_<term>``); ``clt_accuracy``, how often the positive
  outscores every sampled negative.
- ``teacher``: the frozen teacher's macro-AUC and mean binary entropy of its probabilities on the
  training and the validation split. A teacher that is much more confident and accurate on the
  records it was trained on hands the student little more than their labels there.
- ``memory`` (MVKT): the mean cosine between rows of each contrastive bank or queue at the best
  checkpoint, ``memory.mean_row_cosine``; near 1, every record's embedding is the same vector
  and CLT's negatives no longer differ from its positive.
- ``agreement``: on the validation split, the mean over classes of the Pearson correlation between
  the student's and the teacher's probabilities, and the mean absolute difference.
"""

import functools
import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath

from configs import default as default_config
from lead_kt import (
  augment,
  checkpoint,
  cli,
  compilation_cache,
  input_pipeline,
  logger,
  memory,
  methods,
  metrics,
  predict,
  sharding,
  train,
)
from lead_kt.ecg_io import STANDARD_LEADS


def _cosine(a, b) -> float:
  dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
  norms = float(_norm(a) * _norm(b))
  return float(dot) / norms if norms > 0 else float("nan")


def _norm(tree) -> float:
  return float(jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(tree))))


def _mean_entropy(probs: np.ndarray) -> float:
  p = np.clip(probs, 1e-7, 1 - 1e-7)
  return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))


def _restore_best(method, workdir: epath.Path, batch: dict):
  abstract_params, abstract_state = jax.eval_shape(method.init, jax.random.PRNGKey(0), batch)
  target = {"params": abstract_params, "method_state": abstract_state}
  best = checkpoint.load_best_model(str(workdir), target)
  return best["params"], best["method_state"]


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Each term of the run's loss with its weight in the total, BCE first."""
  # Runs from before label_weight existed trained with 1.
  weights = {"bce": config.get("label_weight", 1.0)}
  if config.method == "mvkt":
    return {**weights, "mkd": config.alpha, "clt": config.beta}
  weights["kd"] = config.kd_weight
  if config.kd_variant == "kd_fitnet":
    weights["fitnet"] = config.fitnet_weight
  elif config.kd_variant == "kd_at":
    weights["at"] = config.at_weight
  return weights


def _step_views(config: ml_collections.ConfigDict, info):
  """The run's augmentation (None if it had none), as its train step applied it; fields added
  since the run was trained take their defaults, which are off."""
  augment_config = default_config.get_config().augment
  augment_config.update(config.get("augment", {}))
  columns = [STANDARD_LEADS.index(lead) for lead in info.student_leads]
  return augment.make(augment_config, columns, info.sampling_rate)


def gradient_shares(method, config, params, state, batches) -> dict:
  """Per-term gradient norms over the student backbone, averaged over ``batches``."""
  weights = loss_weights(config)

  @jax.jit
  def measure(params, state, batch, rng):
    def term(name):
      return lambda p: method.loss(p, state, batch, rng)[1][1][name]

    grads = {name: jax.grad(term(name))(params)["student"] for name in weights}
    _, (_, aux) = method.loss(params, state, batch, rng)
    return grads, aux

  sums: dict[str, list[float]] = {}
  for number, batch in enumerate(batches):
    grads, aux = measure(params, state, batch, jax.random.PRNGKey(number))
    norms = {name: weights[name] * _norm(g) for name, g in grads.items()}
    total = sum(norms.values())
    row = {f"{name}_grad_norm": value for name, value in norms.items()}
    row.update({f"{name}_share": value / total for name, value in norms.items()})
    for name in list(weights)[1:]:
      row[f"cos_bce_{name}"] = _cosine(grads["bce"], grads[name])
    for key in (*weights, "clt_accuracy"):
      if key in aux:
        row[key] = float(aux[key])
    for key, value in row.items():
      sums.setdefault(key, []).append(value)
  return {key: float(np.mean(values)) for key, values in sums.items()}


def diagnose(workdir: str, num_batches: int = 16) -> dict:
  """The measurements of the finished MVKT or KD run `workdir` (MVKT: its top directory or its
  student/).
  Reads the run and writes nothing; raises CliError for a workdir that is not a finished run,
  ValueError for a run of another method."""
  workdir = checkpoint.absolute_path(cli.require_finished_run(predict.resolve_run_dir(workdir)))
  results = json.loads((workdir / "results.json").read_text())
  config = ml_collections.ConfigDict(results["config"])
  if config.method not in ("mvkt", "kd"):
    raise ValueError(
      f"{workdir}: lead_kt.diagnose measures MVKT and KD runs, this is {config.method!r}"
    )
  normalization = workdir / "normalization.json"
  if not normalization.exists():
    raise cli.CliError(f"{normalization} is missing: is {workdir} a finished lead_kt run?")
  info = input_pipeline.dataset_info(config.data)
  first_labels = None
  if config.method == "mvkt" and config.clt.negatives == "other_class":
    first_labels = input_pipeline.split_first_labels(config.data, "train")
  method = methods.create(config, info.num_classes, info.split_sizes["train"], first_labels)
  # The file exists: this loads it (and never fits and writes one).
  normalizer = input_pipeline.load_or_fit_normalizer(config.data, str(normalization))
  data_sharding = sharding.batch_sharding(sharding.make_mesh(config.mesh.model))
  train_iter = input_pipeline.train_iterator(
    config.data, normalizer, config.batch_size, data_sharding, config.seed
  )
  batches = [train._model_inputs(next(train_iter)) for _ in range(num_batches)]
  views = _step_views(config, info)
  if views is not None:
    views = jax.jit(views)
    batches = [views(jax.random.PRNGKey(number), b) for number, b in enumerate(batches)]
  params, state = _restore_best(method, workdir, batches[0])
  report = {"workdir": str(workdir), "batches": num_batches}
  report["gradient"] = gradient_shares(method, config, params, state, batches)
  if "memory" in state:
    report["memory"] = memory.mean_row_cosine(state["memory"])

  def teacher_logits(params, state, batch):
    del params
    return {"logits": method.teacher.frozen_apply(state["teacher"], batch["teacher"]).logits}

  evaluate = functools.partial(
    train._evaluate, jax.jit(teacher_logits), method, config, info, normalizer, data_sharding
  )
  teacher_scores = {split: evaluate(params, state, split) for split in ("train", "validation")}
  report["teacher"] = {
    split: {
      "macro_auc": float(
        metrics.evaluate_split(outputs.scores, outputs.labels, info.class_names)["macro_auc"]
      ),
      "mean_entropy": _mean_entropy(outputs.scores),
    }
    for split, outputs in teacher_scores.items()
  }
  teacher_val = teacher_scores["validation"].scores
  student_val = train._evaluate(
    jax.jit(method.predict),
    method,
    config,
    info,
    normalizer,
    data_sharding,
    params,
    state,
    "validation",
  ).scores
  correlations = [
    np.corrcoef(student_val[:, c], teacher_val[:, c])[0, 1] for c in range(info.num_classes)
  ]
  report["agreement"] = {
    "pearson_mean": float(np.nanmean(correlations)),
    "mean_abs_difference": float(np.mean(np.abs(student_val - teacher_val))),
  }
  return report


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logger.quiet_library_logs()
  compilation_cache.enable()
  try:
    report = diagnose(flags.FLAGS.workdir, flags.FLAGS.batches)
  except (cli.CliError, checkpoint.CheckpointError, ValueError, OSError) as error:
    logging.debug("diagnose stopped", exc_info=True)
    return cli.report(error)
  out = epath.Path(report["workdir"]) / "diagnostics.json"
  train._write_atomically(out, json.dumps(report, indent=2))
  logging.info("wrote %s", out)
  print(json.dumps(report, indent=2))
  return 0


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A finished MVKT or KD run (MVKT: top or student/).")
  flags.DEFINE_integer("batches", 16, "Training batches to measure the gradients on.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=cli.parse_absl_flags)
