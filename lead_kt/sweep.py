"""Several runs from one config: cross-validation folds, per-lead studies, method comparisons.

  python -m lead_kt.sweep --config=configs/crossval.py --workdir=runs/cv
  python -m lead_kt.sweep --config=configs/per_lead.py --workdir=runs/per_lead

``config.sweep`` says what to vary: ``methods`` (teacher, baseline, mvkt, kd, ...), ``leads`` (one
single-lead student per lead; empty = the config's ``data.student_leads``), ``folds`` (each
fold k in turn as test, fold k % 10 + 1 as validation, the rest train; empty = the official
split) and ``overrides`` (per method, (dotted field, value) pairs set on its runs only). One
12-lead teacher is trained per fold into ``WORKDIR/teacher[/fold_k]`` and every transfer
method of that fold distils from it. Runs land in ``WORKDIR/<method>[_<lead>][/fold_k]``, which
``python -m lead_kt.report --workdirs WORKDIR/*`` reads (folds pooled). A finished run is not
repeated; an interrupted one resumes from its checkpoint.
"""

import copy
import json
import time

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from lead_kt import config_fields, logger, methods, train


def plan(config, workdir: epath.Path) -> list[tuple[str, epath.Path, object]]:
  """The runs of the sweep in order: ``(name, run directory, config)``; teachers come first."""
  sweep = config.sweep
  for method in sweep.methods:
    methods.validate(_with(config, method=method))
  runs = []
  for fold in tuple(sweep.folds) or (0,):
    fold_dir = f"fold_{fold}" if fold else ""
    teacher_dir = workdir / "teacher" / fold_dir
    needs_teacher = any(m in methods.TRANSFER_METHODS for m in sweep.methods)
    if "teacher" in sweep.methods or needs_teacher:
      runs.append(("teacher", teacher_dir, _with(train.teacher_config(config), fold=fold)))
    for method in sweep.methods:
      if method == "teacher":
        continue
      for lead in tuple(sweep.leads) or (None,):
        name = method if lead is None else f"{method}_{lead}"
        run_config = _with(config, method=method, fold=fold, lead=lead)
        config_fields.set_fields(run_config, config.sweep.get("overrides", {}).get(method, ()))
        if method in methods.TRANSFER_METHODS:
          run_config.teacher.checkpoint = str(teacher_dir)
        runs.append((name, workdir / name / fold_dir, run_config))
  return runs


def _with(config, method=None, fold=None, lead=None):
  c = copy.deepcopy(config)
  with c.unlocked():
    if method is not None:
      c.method = method
    if fold is not None:
      c.data.cv_test_fold = fold
    if lead is not None:
      c.data.student_leads = (lead,)
  return c


def run_sweep(config, workdir: str) -> list[dict]:
  workdir = epath.Path(workdir).expanduser()
  runs = plan(config, workdir)
  summary = []
  start = time.time()
  for number, (name, run_dir, run_config) in enumerate(runs, 1):
    results_path = run_dir / "results.json"
    if results_path.exists():
      logging.info("[sweep %d/%d] %s: done already", number, len(runs), run_dir)
      results = json.loads(results_path.read_text())
    else:
      logging.info("[sweep %d/%d] %s -> %s", number, len(runs), name, run_dir)
      results = train.train_and_evaluate(run_config, str(run_dir))
      if results is None:
        logging.warning("sweep preempted during %s; run it again to resume", run_dir)
        break
    summary.append(
      {
        "name": name,
        "workdir": str(run_dir),
        "fold": run_config.data.cv_test_fold,
        "test_macro_auc": results["test"].get("macro_auc"),
      }
    )
    logging.info("[sweep] %d/%d runs in %.0f s", number, len(runs), time.time() - start)
  (workdir / "sweep.json").write_text(json.dumps(summary, indent=2))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logger.quiet_library_logs()
  run_sweep(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so that importing this module (tests, other tools)
  # never collides with another module's --config flag.
  config_flags.DEFINE_config_file("config", None, "Config file with a `sweep` section.")
  flags.DEFINE_string("workdir", None, "Root directory of the sweep's runs.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
