"""Several runs from one config: cross-validation folds, per-lead studies, method comparisons.

  python -m lead_kt.sweep --config=configs/crossval.py --workdir=runs/cv
  python -m lead_kt.sweep --config=configs/per_lead.py --workdir=runs/per_lead

``config.sweep`` says what to vary: ``methods`` (the runs' names: a method such as teacher,
baseline, mvkt, kd, or a variant named in ``variants``, which maps a name to its method), ``leads``
(one single-lead student per lead; empty = the config's ``data.student_leads``), ``folds`` (each
fold k in turn as test, fold k % 10 + 1 as validation, the rest train; empty = the official
split), ``seeds`` (each student run once per seed; empty = ``config.seed``) and ``overrides``
(per run name, (dotted field, value) pairs set on its runs only). One 12-lead teacher (of
``config.seed``) is trained per fold into ``WORKDIR/teacher[/fold_k]`` and every transfer run of
that fold distils from it; runs with out-of-fold or ensemble targets (``teacher.target``) distil
from the fold's K part teachers in ``WORKDIR/teacher_oofK[/fold_k]/part_j``, trained before the
first run that needs them. Runs land in ``WORKDIR/<name>[_<lead>][/seed_s][/fold_k]``, which
``python -m lead_kt.report --workdirs WORKDIR/*`` reads (folds pooled, seeds paired). A finished
run is not repeated; an interrupted one resumes from its checkpoint.
"""

import copy
import json
import time

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from lead_kt import compilation_cache, config_fields, logger, methods, train


def plan(config, workdir: epath.Path) -> list[tuple[str, epath.Path, object]]:
  """The runs of the sweep in order: ``(name, run directory, config)``; teachers come first."""
  sweep = config.sweep
  variants = dict(sweep.get("variants", {}))
  method_of = {name: variants.get(name, name) for name in sweep.methods}
  for method in method_of.values():
    methods.validate(_with(config, method=method))
  seeds = tuple(sweep.get("seeds", ())) or (None,)
  runs = []
  for fold in tuple(sweep.folds) or (0,):
    fold_dir = f"fold_{fold}" if fold else ""
    teacher_dir = workdir / "teacher" / fold_dir
    needs_teacher = any(m in methods.TRANSFER_METHODS for m in method_of.values())
    if "teacher" in method_of.values() or needs_teacher:
      runs.append(("teacher", teacher_dir, _with(train.teacher_config(config), fold=fold)))
    # Seeds outermost, so that a sweep stopped early has every run of its first seeds.
    for seed in seeds:
      for name, method in method_of.items():
        if method == "teacher":
          continue
        for lead in tuple(sweep.leads) or (None,):
          run_name = name if lead is None else f"{name}_{lead}"
          run_config = _with(config, method=method, fold=fold, lead=lead, seed=seed)
          config_fields.set_fields(run_config, sweep.get("overrides", {}).get(name, ()))
          if method in methods.TRANSFER_METHODS:
            run_config.teacher.checkpoint = str(teacher_dir)
            if run_config.teacher.get("target", "single") != "single":
              # Out-of-fold teachers of the fold, shared by every run that asks for them.
              parts_dir = workdir / f"teacher_oof{run_config.teacher.oof_parts}" / fold_dir
              for part_dir, part_config in train.teacher_runs(run_config, parts_dir):
                if all(part_dir != planned for _, planned, _ in runs):
                  runs.append(("teacher", part_dir, part_config))
              run_config.teacher.checkpoint = str(parts_dir)
          seed_dir = "" if seed is None else f"seed_{seed}"
          runs.append((run_name, workdir / run_name / seed_dir / fold_dir, run_config))
  return runs


def _with(config, method=None, fold=None, lead=None, seed=None):
  c = copy.deepcopy(config)
  with c.unlocked():
    if method is not None:
      c.method = method
    if fold is not None:
      c.data.cv_test_fold = fold
    if lead is not None:
      c.data.student_leads = (lead,)
    if seed is not None:
      c.seed = seed
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
  compilation_cache.enable()
  run_sweep(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so that importing this module (tests, other tools)
  # never collides with another module's --config flag.
  config_flags.DEFINE_config_file("config", None, "Config file with a `sweep` section.")
  flags.DEFINE_string("workdir", None, "Root directory of the sweep's runs.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
