"""The one training loop of every method: init or restore, step, evaluate, checkpoint, log.

``train_and_evaluate(config, workdir)`` trains ``config.method`` (for transfer methods, first
the 12-lead teacher when no teacher checkpoint is given), selects the checkpoint on the validation
split, evaluates the test split once with it and writes ``WORKDIR/results.json``.
"""

import copy
import functools
import io
import json
import time
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath

from lead_kt import (
  augment,
  checkpoint,
  config_fields,
  input_pipeline,
  logger,
  methods,
  metrics,
  optim,
  pretrained,
  sharding,
)
from lead_kt.ecg_io import STANDARD_LEADS
from lead_kt.methods.base import RunStart
from lead_kt.methods.common import build_backbone

# Fields that must match for a workdir's checkpoints to be resumed by a config.
_RUN_IDENTITY = (
  "method",
  "student.backbone",
  "teacher.backbone",
  "data.name",
  "data.student_leads",
  "data.crop_len",
  "data.cv_test_fold",
  "batch_size",
  "teacher.target",
  "data.holdout_part",
)
# What a run_identity.json written before a field joined _RUN_IDENTITY meant by its absence.
_IDENTITY_DEFAULTS = {"teacher.target": "single", "data.holdout_part": 0}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  method_state: Any
  rng: jax.Array
  # The first step whose loss or gradient was not finite; -1 while all were.
  first_nonfinite_step: jax.Array


class NonFiniteLossError(FloatingPointError):
  pass


class ConfigError(ValueError):
  pass


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Runs ``config`` in ``workdir``; returns the results, or None when stopped by preemption."""
  config = pretrained.with_recorded_contract(config)
  methods.validate(config)
  pretrained.check_method(config)
  workdir = checkpoint.absolute_path(workdir)
  if config.method not in methods.TRANSFER_METHODS:
    return _run(config, workdir)
  if config.teacher.checkpoint:
    return _run(config, workdir, teacher_dir=checkpoint.absolute_path(config.teacher.checkpoint))
  # A finished teacher is never run again: the student may already hold its best, which a rerun
  # (e.g. replaying an epoch after a damaged checkpoint) could replace.
  teacher_results = []
  for run_dir, run_config in teacher_runs(config, workdir / "teacher"):
    finished = _finished_results(run_dir)
    if finished is None:
      finished = _run(run_config, run_dir)
    if finished is None:
      return None
    teacher_results.append(finished)
  results = _run(config, workdir / "student", teacher_dir=workdir / "teacher")
  if results is not None and jax.process_index() == 0:
    (workdir / "predictions").mkdir(exist_ok=True)
    for source in (workdir / "student" / "predictions").iterdir():
      _write_atomically(workdir / "predictions" / source.name, source.read_bytes())
    # The run's own summary at the top: the student's results with the teacher's beside them.
    headlines = [_headline(r) for r in teacher_results]
    summary = {**results, "teacher": headlines[0] if len(headlines) == 1 else headlines}
    _write_atomically(workdir / "results.json", json.dumps(summary, indent=2))
  return results


def _normalization_file(workdir: epath.Path, teacher_dir: epath.Path | None) -> epath.Path:
  """Where the run's input normalisation comes from: its own file once it has one; else a given
  teacher's (or, without one, the init source's), because a network's view must be normalised as
  it was trained (a teacher converted from PyTorch brings the statistics of its training). A
  teacher trained here on the same train split has the statistics the run would fit. The run
  keeps a copy (for predict)."""
  own = workdir / "normalization.json"
  teachers = None if teacher_dir is None else teacher_dir / "normalization.json"
  if own.exists() or teachers is None or not teachers.exists():
    return own
  if jax.process_index() == 0:
    _write_atomically(own, teachers.read_text())
  return teachers


def _finished_results(workdir: epath.Path) -> dict | None:
  """A run's results.json, written last and whole: the run is finished when it exists."""
  path = workdir / "results.json"
  return json.loads(path.read_text()) if path.exists() else None


def _write_atomically(path: epath.Path, data: str | bytes) -> None:
  """Readers, and a restart after a kill, see the old file or the new one, never a part."""
  partial = path.parent / f"{path.name}.tmp"
  if isinstance(data, str):
    partial.write_text(data)
  else:
    partial.write_bytes(data)
  partial.replace(path)


def teacher_config(config: ml_collections.ConfigDict, part: int = 0) -> ml_collections.ConfigDict:
  """The 12-lead teacher run that a transfer method trains first; ``part`` k > 0: the one that
  leaves out part k of the train split's ``teacher.oof_parts`` (out-of-fold targets)."""
  tc = copy.deepcopy(config)
  with tc.unlocked():
    tc.method = "teacher"
    tc.student = copy.deepcopy(config.teacher)
    if config.teacher.num_epochs > 0:
      tc.num_epochs = config.teacher.num_epochs
    tc.eval_every_epochs = config.teacher.get("eval_every_epochs", 1)
    tc.teacher.target = "single"  # a teacher run is taught by nobody
    overrides = [(f"optimizer.{key}", value) for key, value in config.teacher.optimizer.items()]
    # The teacher trains without the student's augmentation unless teacher.augment sets some.
    overrides += [(f"augment.{key}", 0.0) for key in augment.STRENGTHS]
    overrides += [(f"augment.{key}", value) for key, value in config.teacher.augment.items()]
    if part:
      overrides += [("data.holdout_parts", config.teacher.oof_parts), ("data.holdout_part", part)]
    config_fields.set_fields(tc, overrides)
  return tc


def teacher_runs(config, teacher_dir: epath.Path) -> list[tuple[epath.Path, Any]]:
  """The teacher runs a transfer run is taught by, as ``(run directory, config)``: ``teacher_dir``
  itself, or for out-of-fold and ensemble targets its ``part_1`` .. ``part_K``."""
  if config.teacher.get("target", "single") == "single":
    return [(teacher_dir, teacher_config(config))]
  parts = range(1, config.teacher.oof_parts + 1)
  return [(teacher_dir / f"part_{k}", teacher_config(config, k)) for k in parts]


def _headline(results: dict) -> dict:
  keys = ("method", "backbone", "student_leads", "best_epoch")
  head = {k: results[k] for k in keys}
  head["validation_macro_auc"] = results["validation"]["macro_auc"]
  head["test_macro_auc"] = results["test"]["macro_auc"]
  return head


def _run(config, workdir: epath.Path, teacher_dir: epath.Path | None = None) -> dict | None:
  start_time = time.time()
  info = input_pipeline.dataset_info(config.data)
  mesh = sharding.make_mesh(config.mesh.model, config.mesh.num_devices)
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh)
  # Everything that can refuse the run is checked before anything is written: a run that fails
  # to start leaves its workdir as it was (a corrected command then starts cleanly).
  identity = _checked_identity(config, info, workdir)
  first_labels = None
  if config.method == "mvkt" and config.clt.negatives == "other_class":
    first_labels = input_pipeline.split_first_labels(config.data, "train")
  method = methods.create(config, info.num_classes, info.split_sizes["train"], first_labels)
  views = augment.make(
    config.augment,
    [STANDARD_LEADS.index(lead) for lead in info.student_leads],
    info.sampling_rate,
  )
  init_from = config.student.init_from
  init_dir = checkpoint.absolute_path(init_from) if init_from else None
  teacher_dirs = [] if teacher_dir is None else _teacher_dirs(config, info, teacher_dir)
  if init_dir is not None:
    pretrained.check_source(init_dir, config.student, _input_leads(config, info))
  workdir.mkdir(parents=True, exist_ok=True)
  if identity is not None and jax.process_index() == 0:
    _write_atomically(workdir / "run_identity.json", json.dumps(identity, indent=2))
  normalizer = input_pipeline.load_or_fit_normalizer(
    config.data, str(_normalization_file(workdir, teacher_dirs[0] if teacher_dirs else init_dir))
  )
  data_sharding = sharding.batch_sharding(mesh)

  def split_batches(split: str):
    return input_pipeline.eval_batches(
      config.data, split, normalizer, config.eval_batch_size, data_sharding
    )

  train_iter = input_pipeline.train_iterator(
    config.data, normalizer, config.batch_size, data_sharding, config.seed
  )
  steps_per_epoch = train_iter.steps_per_epoch
  if steps_per_epoch < 1:
    raise ConfigError(
      f"batch size {config.batch_size} exceeds the {info.split_sizes['train']} training records"
    )
  total_steps = steps_per_epoch * config.num_epochs
  example = _peek(train_iter)
  # The shape of what the trained network reads: all 12 leads for a teacher run.
  input_shape = example["teacher" if config.method == "teacher" else "student"].shape
  frozen = None
  if config.student.freeze_backbone:
    head = pretrained.head_modules(
      functools.partial(build_backbone, config.student), info.num_classes, input_shape
    )
    frozen = pretrained.frozen_mask(config.method, head)
  tx, schedule = optim.create(config.optimizer, steps_per_epoch, config.num_epochs, frozen)

  init_fn = functools.partial(_init_state, method, tx, example)
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(config.seed))
  state_shardings = _state_shardings(method, abstract, mesh)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shardings
  )
  ckpts = checkpoint.RunCheckpoints(
    str(workdir), config.checkpoint.keep_latest, config.checkpoint.async_save
  )
  progress = {"best_score": None, "best_epoch": 0, "best_step": 0, "history": []}
  if ckpts.latest_step() is not None:
    state, data_state, progress = ckpts.restore(abstract)
    train_iter.set_state(data_state)
    logging.info("resumed %s at step %d", workdir, int(state.step))
  else:
    state = jax.jit(init_fn, out_shardings=state_shardings)(jax.random.PRNGKey(config.seed))
    if init_dir is not None:
      state = _with_initial_network(state, config, info, init_dir, input_shape, mesh)
    if teacher_dirs:
      state = _with_teacher(state, teacher_dirs)
    if hasattr(method, "prepare"):
      prepared = method.prepare(
        state.params, state.method_state, RunStart(steps_per_epoch, split_batches)
      )
      state = state.replace(method_state=jax.device_put(prepared, state_shardings.method_state))
  # best/ can be ahead of the state training continues from (a kill between an epoch end's best
  # and latest saves, or a skipped damaged latest step). Those best steps are dropped: replaying
  # the epochs, exact as every resume, saves them again. Keeping one instead would trust an epoch
  # that the restored progress never saw, and saving the latest step first would not help after
  # a skipped damaged step.
  ckpts.drop_best_after(int(state.step))

  step_fn = _make_train_step(method, tx, schedule, views)
  metric_names = jax.eval_shape(step_fn, abstract, example)[1].keys()
  collection = logger.metrics_collection(metric_names)
  rep = sharding.replicated(mesh)

  @functools.partial(
    jax.jit,
    in_shardings=(state_shardings, data_sharding),
    out_shardings=(state_shardings, rep),
    donate_argnums=0,
  )
  def train_step(state, batch):
    new_state, scalars = step_fn(state, batch)
    return new_state, collection.single_from_model_output(**scalars)

  # Validation may compute more than inference does (e.g. agreement with a teacher).
  predict = jax.jit(getattr(method, "evaluation_outputs", method.predict))
  evaluate = functools.partial(_evaluate, predict, method, config, info, normalizer, data_sharding)

  # Checkpoints are chosen on validation (never on test) by this score, higher is better.
  selection = getattr(method, "selection_metric", "macro_auc")
  step = int(state.step)
  run_log = logger.RunLogger(str(workdir), total_steps, config.batch_size, config.method, step)
  run_log.start(step)
  accumulated = None
  with checkpoint.Preemption() as preemption:
    while step < total_steps:
      batch = next(train_iter)
      state, step_metrics = train_step(state, _model_inputs(batch))
      step += 1
      accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
      epoch_end = step % steps_per_epoch == 0
      if epoch_end or step % config.log_every_steps == 0:
        _check_finite(state, ckpts, workdir)
        run_log.train(step, step // steps_per_epoch, accumulated.compute())
        accumulated = None
      # Validation, the best checkpoint and the latest one every eval_every_epochs epochs (and
      # after the last): long schedules pay for evaluation a fraction of the epochs.
      evaluation_end = epoch_end and (
        (step // steps_per_epoch) % config.eval_every_epochs == 0 or step == total_steps
      )
      if evaluation_end:
        epoch = step // steps_per_epoch
        val = evaluate(state.params, state.method_state, "validation")
        scores = _epoch_scores(val)
        score = scores[selection]
        progress["history"].append({"epoch": epoch, "step": step, **scores})
        run_log.write(step, scores, "validation")
        logging.info("[%s] epoch %d validation %s", config.method, epoch, _fmt(scores))
        if _improves(score, progress["best_score"]):
          progress.update(best_score=score, best_epoch=epoch, best_step=step)
          ckpts.save_best(step, {"params": state.params, "method_state": state.method_state})
        ckpts.save(step, state, train_iter.get_state(), progress)
      if preemption.requested(step):
        if not evaluation_end:  # an evaluation's end has just been saved
          ckpts.save(step, state, train_iter.get_state(), progress, force=True)
        ckpts.wait()
        ckpts.close()
        run_log.close()
        logging.warning("preempted at step %d; checkpoint saved in %s", step, workdir)
        return None
  ckpts.wait()
  run_log.close()

  best = ckpts.restore_best({"params": abstract.params, "method_state": abstract.method_state})
  ckpts.close()
  val = evaluate(best["params"], best["method_state"], "validation")
  test = evaluate(best["params"], best["method_state"], "test")
  diagnostics = {}
  if hasattr(method, "diagnostics"):
    diagnostics["diagnostics"] = method.diagnostics(
      best["params"], best["method_state"], split_batches
    )
  results = {
    "method": config.method,
    "dataset": config.data.name,
    "backbone": config.student.backbone,
    "teacher_backbone": config.teacher.backbone if teacher_dir is not None else None,
    "student_leads": list(info.teacher_leads if config.method == "teacher" else info.student_leads),
    "class_names": list(info.class_names),
    "split_sizes": dict(info.split_sizes),
    # What inference needs to cut a recording as evaluation did (read by lead_kt.predict).
    "sampling_rate": info.sampling_rate,
    "crop_len": info.crop_len,
    "eval_stride": info.eval_stride,
    "best_epoch": progress["best_epoch"],
    "history": progress["history"],
    **_summaries(val, test, list(info.class_names)),
    **diagnostics,
    "devices": {"count": jax.device_count(), "kind": jax.devices()[0].device_kind},
    "wall_time_s": time.time() - start_time,
    "config": json.loads(config.to_json_best_effort()),
  }
  if jax.process_index() == 0:
    (workdir / "predictions").mkdir(exist_ok=True)
    for split, outputs in (("validation", val), ("test", test)):
      if outputs.scores is not None:
        _write_atomically(workdir / "predictions" / f"{split}.npz", predictions_npz(outputs))
    if hasattr(method, "write_figures"):
      method.write_figures(config, workdir)
    # Last: a run with results.json is finished (see _finished_results).
    _write_atomically(workdir / "results.json", json.dumps(results, indent=2))
  logging.info(
    "[%s] best epoch %d: validation %s; test %s",
    config.method,
    results["best_epoch"],
    _fmt(_epoch_scores(val)),
    _fmt(_epoch_scores(test)),
  )
  return results


def _improves(score: float, best: float | None) -> bool:
  """Whether a validation score beats the best so far; a NaN score (no class of the split has
  both labels) only fills an empty slot, so that a best checkpoint always exists."""
  if best is None:
    return True
  return bool(np.isfinite(score) and (not np.isfinite(best) or score > best))


def _init_state(method, tx, example, rng) -> TrainState:
  init_rng, state_rng = jax.random.split(rng)
  params, method_state = method.init(init_rng, _model_inputs(example))
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    method_state=method_state,
    rng=state_rng,
    first_nonfinite_step=jnp.full((), -1, jnp.int32),
  )


def _make_train_step(method, tx, schedule, views=None):
  """``views``: ``augment.make``'s function, or None (no augmentation: the program of before)."""

  def step_fn(state: TrainState, batch):
    rng, step_rng = jax.random.split(state.rng)
    if views is not None:
      step_rng, augment_rng = jax.random.split(step_rng)
      batch = views(augment_rng, batch)
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)
    (loss, (method_state, terms)), grads = grad_fn(
      state.params, state.method_state, batch, step_rng
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))

    def keep_good(new, old):
      # A non-finite step leaves the state as it was; the host stops the run at its next check.
      return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    new_state = state.replace(
      step=state.step + 1,
      params=keep_good(params, state.params),
      opt_state=keep_good(opt_state, state.opt_state),
      method_state=keep_good(method_state, state.method_state),
      rng=rng,
      first_nonfinite_step=jnp.where(
        (state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step
      ),
    )
    scalars = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step)}
    return new_state, {**scalars, **terms}

  return step_fn


def _state_shardings(method, abstract: TrainState, mesh):
  rep = sharding.replicated(mesh)
  shardings = jax.tree.map(lambda _: rep, abstract)
  if hasattr(method, "state_shardings"):
    shardings = shardings.replace(method_state=method.state_shardings(abstract.method_state, mesh))
  return shardings


def _model_inputs(batch: dict) -> dict:
  return {k: batch[k] for k in ("teacher", "student", "label", "index", "mask")}


def _peek(train_iter):
  """The first batch, leaving the iterator where it was."""
  position = train_iter.get_state()
  batch = next(train_iter)
  train_iter.set_state(position)
  return batch


def _check_finite(state: TrainState, ckpts, workdir) -> None:
  bad_step = int(state.first_nonfinite_step)
  if bad_step >= 0:
    ckpts.wait()
    raise NonFiniteLossError(
      f"the loss or its gradient became NaN/Inf at step {bad_step + 1}; the run stopped and the "
      f"last good checkpoint (step {ckpts.latest_step()}) is kept in {workdir}"
    )


class SplitOutputs(NamedTuple):
  """What evaluating one split gives.

  scores: per-record class probabilities [n, C] (windows aggregated), or None for a method that
    predicts no ``logits``.
  labels: [n, C] in record order.
  means: scalar summaries of the other outputs of ``method.predict``: ``method.summarize(outputs,
    records, labels)`` when the method has one, else the mean over real windows of each [B] output.
  """

  scores: np.ndarray | None
  labels: np.ndarray
  means: dict


def _evaluate(predict, method, config, info, normalizer, data_sharding, params, mstate, split):
  chunks = []
  for batch in input_pipeline.eval_batches(
    config.data, split, normalizer, config.eval_batch_size, data_sharding
  ):
    outputs = predict(params, mstate, _model_inputs(batch))
    chunks.append(
      sharding.to_host(
        {**outputs, "record": batch["record"], "mask": batch["mask"], "label": batch["label"]}
      )
    )
  real = np.concatenate([c["mask"] for c in chunks]) > 0
  # Padding windows are dropped here, so nothing downstream can count them.
  outputs = {k: np.concatenate([c[k] for c in chunks])[real] for k in chunks[0] if k != "mask"}
  records, window_labels = outputs.pop("record"), outputs.pop("label")
  labels = input_pipeline.split_labels(config.data, split)
  scores, losses = None, {}
  if "logits" in outputs:
    logits = outputs.pop("logits").astype(np.float64)
    probs = 1.0 / (1.0 + np.exp(-logits))
    scores = input_pipeline.aggregate_windows(
      probs, records, np.ones(len(records)), info.split_sizes[split], config.data.eval_aggregate
    )
    # The loss of the labels on the split's windows (the train loss's BCE term, unaugmented).
    bce = np.logaddexp(0.0, logits) - window_labels * logits
    losses["bce"] = float(bce.mean())
  if hasattr(method, "summarize"):
    means = method.summarize(outputs, records, labels)
  else:
    means = {k: float(v.mean()) for k, v in outputs.items() if v.ndim == 1}
  return SplitOutputs(scores, labels, {**means, **losses})


def predictions_npz(outputs: SplitOutputs) -> bytes:
  """A split's ``predictions/<split>.npz``: per-record ``scores``, ``labels`` and ``index``."""
  npz = io.BytesIO()
  np.savez(npz, scores=outputs.scores, labels=outputs.labels, index=np.arange(len(outputs.labels)))
  return npz.getvalue()


def _epoch_scores(outputs: SplitOutputs) -> dict:
  scores = dict(outputs.means)
  if outputs.scores is not None:
    names = [str(i) for i in range(outputs.labels.shape[1])]
    scores["macro_auc"] = metrics.evaluate_split(outputs.scores, outputs.labels, names)["macro_auc"]
  return scores


def _summaries(val: SplitOutputs, test: SplitOutputs, class_names: list) -> dict:
  """results.json's "validation" and "test" sections; test thresholds come from validation."""
  if val.scores is None:
    return {"validation": dict(val.means), "test": dict(test.means)}
  validation = metrics.evaluate_split(val.scores, val.labels, class_names)
  test_summary = metrics.summarize(val.scores, val.labels, test.scores, test.labels, class_names)
  return {"validation": {**validation, **val.means}, "test": {**test_summary, **test.means}}


def _fmt(scores: dict) -> str:
  shown = {k: v for k, v in scores.items() if isinstance(v, int | float)}
  return ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))


def _identity(config, num_classes: int) -> dict:
  identity = {"num_classes": num_classes}
  for field in _RUN_IDENTITY:
    value = config
    for part in field.split("."):
      value = value[part]
    identity[field] = list(value) if isinstance(value, tuple | list) else value
  return identity


def _checked_identity(config, info, workdir: epath.Path) -> dict | None:
  """The identity to write into a new workdir, None when the workdir has it already; refuses a
  workdir whose checkpoints belong to an incompatible run. Writes nothing."""
  path = workdir / "run_identity.json"
  identity = _identity(config, info.num_classes)
  if not path.exists():
    return identity
  stored = json.loads(path.read_text())
  stored = {k: stored.get(k, _IDENTITY_DEFAULTS.get(k)) for k in identity}
  diffs = {k: (stored[k], v) for k, v in identity.items() if stored[k] != v}
  if diffs:
    described = "; ".join(
      f"{k}: workdir has {a!r}, config has {b!r}" for k, (a, b) in diffs.items()
    )
    raise ConfigError(
      f"{workdir} holds another run's checkpoints ({described}); use another --workdir"
    )
  return None


def _input_leads(config, info) -> int:
  return len(info.teacher_leads if config.method == "teacher" else info.student_leads)


def _teacher_dirs(config, info, teacher_dir: epath.Path) -> list[epath.Path]:
  """The finished teacher runs of ``teacher_dir`` (one, or ``part_1`` .. ``part_K``), after
  checking that each is the teacher this run needs."""
  dirs = [run_dir for run_dir, _ in teacher_runs(config, teacher_dir)]
  expected = {
    "method": "teacher",
    "student.backbone": config.teacher.backbone,
    "num_classes": info.num_classes,
  }
  for part, run_dir in enumerate(dirs, 1):
    identity_path = run_dir / "run_identity.json"
    if not identity_path.exists():
      raise checkpoint.CheckpointError(f"{run_dir} is not a lead_kt run (no run_identity.json)")
    stored = json.loads(identity_path.read_text())
    if len(dirs) > 1:
      expected["data.holdout_part"] = part
      stored.setdefault("data.holdout_part", 0)
    results = _finished_results(run_dir) or {}
    stored_kwargs = results.get("config", {}).get("student", {}).get("kwargs")
    if stored_kwargs is not None:
      stored["student.kwargs"] = json.loads(json.dumps(stored_kwargs))
      expected["student.kwargs"] = json.loads(json.dumps(config.teacher.kwargs.to_dict()))
    for key, value in expected.items():
      if stored.get(key) != value:
        raise checkpoint.CheckpointError(
          f"teacher checkpoint {run_dir} has {key} = {stored.get(key)!r}, but this run needs "
          f"{value!r} (config.teacher.backbone and .kwargs / the dataset's classes / "
          "teacher.target)"
        )
  return dirs


def _with_teacher(state: TrainState, teacher_dirs: list[epath.Path]) -> TrainState:
  """Puts the trained teachers' best variables into the method state (in place of its init),
  stacked on a leading axis when there are several (``methods.common.Teacher``)."""
  placeholder = state.method_state["teacher"]
  stacked = len(teacher_dirs) > 1
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(
      a.shape[1:] if stacked else a.shape, a.dtype, sharding=a.sharding
    ),
    {"params": placeholder["params"], "method_state": placeholder["stats"]},
  )
  loaded = [checkpoint.load_best_model(str(run_dir), abstract) for run_dir in teacher_dirs]
  best = jax.tree.map(lambda *a: jnp.stack(a), *loaded) if stacked else loaded[0]
  teacher = {"params": best["params"], "stats": best["method_state"]}
  teacher = jax.device_put(teacher, jax.tree.map(lambda a: a.sharding, placeholder))
  return state.replace(method_state={**state.method_state, "teacher": teacher})


def _with_initial_network(
  state: TrainState, config, info, source: epath.Path, input_shape, mesh
) -> TrainState:
  """Puts the init source's best variables in place of the initialised network's; a head for
  another class count keeps its initial values (lead_kt/pretrained.py)."""
  _, stored_classes = pretrained.check_source(source, config.student, input_shape[-1])
  build = functools.partial(build_backbone, config.student)
  rep = sharding.replicated(mesh)
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
    pretrained.abstract_variables(build(stored_classes), tuple(input_shape)),
  )
  best = checkpoint.load_best_model(
    str(source),
    {"params": abstract["params"], "method_state": {"batch_stats": abstract["batch_stats"]}},
  )
  loaded = {"params": best["params"], "batch_stats": best["method_state"]["batch_stats"]}
  if stored_classes != info.num_classes:
    initial = pretrained.network_variables(config.method, state.params, state.method_state)
    head = pretrained.head_modules(build, info.num_classes, input_shape)
    loaded = pretrained.replace_except(initial, loaded, head)
    logging.info("init_from %s: %s replaced for %d classes", source, sorted(head), info.num_classes)
  params, method_state = pretrained.with_network_variables(
    config.method, state.params, state.method_state, loaded
  )
  return state.replace(params=params, method_state=method_state)
