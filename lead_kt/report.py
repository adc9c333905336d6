"""Compare finished runs: markdown tables with 95% CIs, paired differences and plots.

  python -m lead_kt.report --workdirs DIR1 DIR2 ... --out OUT [--baseline DIR ...]
      [--labels NAME1 NAME2 ...]

A run directory holds ``results.json`` (method, dataset, backbone, student_leads, class_names, ...)
and ``predictions/{validation,test}.npz`` (``scores`` [n, C], ``labels`` [n, C], ``index`` [n]).
A cross-validated run is a directory of ``fold_*/`` run directories, a run of several training
seeds one of ``seed_*/`` directories (each a run or its folds). Every number in the report is
recomputed from the predictions with ``lead_kt.metrics``: thresholds are chosen on each fold's
validation split, and a cross-validated run is pooled by concatenating its folds' test predictions
(each binarised with its own fold's thresholds), so its AUC and bootstrap CIs are over all pooled
test records.

A row is named after its run: the method, or the sweep's variant name where the run directory (or,
for a transfer run's ``student/``, the directory above it) is named neither after the method nor
``<method>_<lead>``; runs that would still share a row (the same method, leads and backbone) add
as many of their workdir's last folders as tell them apart, e.g. ``mvkt (a/student)``.
``--labels`` names the ``--workdirs`` rows instead, one label per directory, in order.

With ``--baseline``, every run is paired (same test records, paired bootstrap) with the baseline of
its own dataset and leads, or with the dataset's only baseline.

Writes ``OUT/report.md`` and, per dataset, ``roc_<dataset>.png``, ``f1_<dataset>.png`` and, when the
runs cover several student leads, ``per_lead_<dataset>.png``. OUT's parent must take a new
directory (checked before any work); the files are made beside OUT and moved into it at the end,
``report.md`` last, each replacing an older one of its name.
"""

import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from lead_kt import cli, metrics

RESULTS_FILE = cli.RESULTS_FILE
REQUIRED_KEYS = ("method", "dataset", "backbone", "student_leads", "class_names")
STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's metadata and its (pooled) test predictions.

  scores, labels: [n, C]; thresholds: [n, C] (each record's fold thresholds); keys: [n] str record
  identities (``"fold_k/index"`` for cross-validated runs, ``"index"`` otherwise).
  """

  path: Path
  results: dict
  folds: tuple[str, ...]
  scores: np.ndarray
  labels: np.ndarray
  thresholds: np.ndarray
  keys: np.ndarray
  # A run trained with several seeds (``seed_*/``): every seed's (scores, thresholds) in the
  # record order of ``keys``; ``scores`` and ``thresholds`` are the first seed's (for the plots).
  seeds: tuple[str, ...] = ()
  members: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
  # The row's name when given (--labels, or the name with the workdir added where runs share one).
  title: str | None = None
  # results.json's ``history`` (one entry per validation) of each fold, or of the one run: pairs
  # of (fold name, or "" for a run without folds, and the entries); every seed's for seeds.
  histories: tuple[tuple[str, tuple[dict, ...]], ...] = ()

  @property
  def name(self) -> str:
    """The title; else the method, or the sweep's variant name (the run directory's, e.g.
    ``mvkt_infonce``, or for a transfer run's ``student/`` the one above it) where that is
    neither the method nor ``<method>_<lead>``."""
    if self.title:
      return self.title
    method = self.results["method"]
    leads = self.results["student_leads"] or ()
    plain = {method, *(f"{method}_{lead}" for lead in leads)}
    folder = self.path.parent if self.path.name == "student" else self.path
    if folder.name in plain or folder.name.startswith(("fold_", "seed_")):
      return method
    return folder.name

  @property
  def runs(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(scores, thresholds) of each seed, or of the one run."""
    return self.members or ((self.scores, self.thresholds),)

  @property
  def dataset(self) -> str:
    return self.results["dataset"]

  @property
  def class_names(self) -> list[str]:
    return list(self.results["class_names"])

  @property
  def crop_len(self) -> int | None:
    """Window length in samples (0 = whole records); None for runs that do not say."""
    return self.results.get("crop_len")

  @property
  def leads(self) -> str:
    return leads_label(self.results["student_leads"])

  @property
  def row(self) -> tuple[str, str, str]:
    """(name, leads, backbone): the row this run fills in the main table."""
    return (self.name, self.leads, self.results["backbone"])

  @property
  def label(self) -> str:
    method, leads, backbone = self.row
    return f"{method} ({leads}, {backbone})"


def leads_label(student_leads: Sequence[str] | None) -> str:
  """ "I", "I+II", or "12 leads" for all (or none given, as a teacher run may write)."""
  if not student_leads or len(student_leads) == len(STANDARD_LEADS):
    return "12 leads"
  return "+".join(student_leads)


def _read_results(run_dir: Path) -> dict:
  path = cli.require_finished_run(run_dir) / RESULTS_FILE
  results = json.loads(path.read_text())
  missing = [key for key in REQUIRED_KEYS if key not in results]
  if missing:
    raise ValueError(f"{path}: missing keys {missing}")
  return results


def _read_predictions(run_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(scores [n, C], labels [n, C], index [n]) of ``run_dir/predictions/<split>.npz``."""
  path = run_dir / "predictions" / f"{split}.npz"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: predictions file not found")
  with np.load(path) as data:
    missing = [key for key in ("scores", "labels", "index") if key not in data]
    if missing:
      raise ValueError(f"{path}: missing arrays {missing}")
    scores, labels, index = data["scores"], data["labels"], data["index"]
  if scores.ndim != 2 or labels.shape != scores.shape or index.shape != scores.shape[:1]:
    raise ValueError(
      f"{path}: expected scores and labels [n, C] and index [n], got {scores.shape}, "
      f"{labels.shape}, {index.shape}"
    )
  return scores, labels, index


def _fold_dirs(path: Path) -> list[Path]:
  folds = [p.parent for p in path.glob(f"fold_*/{RESULTS_FILE}")]
  return sorted(folds, key=lambda p: (len(p.name), p.name))  # fold_2 before fold_10


def _seed_dirs(path: Path) -> list[Path]:
  seeds = [p for p in path.glob("seed_*") if p.is_dir()]
  return sorted(seeds, key=lambda p: (len(p.name), p.name))


def load_run(path: str | Path) -> Run:
  """Loads a run directory, a directory of ``fold_*`` runs pooled into one run, or a directory of
  ``seed_*`` runs (each a run or folds) of one configuration trained with several seeds."""
  path = Path(path)
  seed_dirs = _seed_dirs(path)
  if seed_dirs and not (path / RESULTS_FILE).is_file():
    finished = [d for d in seed_dirs if (d / RESULTS_FILE).is_file() or _fold_dirs(d)]
    for unfinished in sorted(set(seed_dirs) - set(finished)):
      print(f"report: {unfinished} has no results yet; left out", file=sys.stderr)
    if not finished:
      _read_results(seed_dirs[0])  # raises the missing-results error
    return _load_seeds(path, [load_run(d) for d in finished])
  fold_dirs = [path] if (path / RESULTS_FILE).is_file() else _fold_dirs(path)
  if not fold_dirs:
    _read_results(path)  # raises the missing-results error
  results = [_read_results(d) for d in fold_dirs]
  for key in REQUIRED_KEYS:
    if any(r[key] != results[0][key] for r in results):
      raise ValueError(f"{path}: folds disagree on {key!r}")
  parts = []
  for fold_dir in fold_dirs:
    val_scores, val_labels, _ = _read_predictions(fold_dir, "validation")
    scores, labels, index = _read_predictions(fold_dir, "test")
    if scores.shape[1] != len(results[0]["class_names"]):
      raise ValueError(
        f"{fold_dir}: {scores.shape[1]} score columns but {len(results[0]['class_names'])} "
        "class_names in results.json"
      )
    thresholds = metrics.choose_thresholds(val_scores, val_labels)
    prefix = f"{fold_dir.name}/" if fold_dir != path else ""
    keys = np.array([f"{prefix}{i}" for i in index])
    parts.append((scores, labels, np.broadcast_to(thresholds, scores.shape), keys))
  scores, labels, thresholds, keys = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
  folds = tuple(d.name for d in fold_dirs) if fold_dirs != [path] else ()
  histories = tuple(
    (fold, tuple(r.get("history", ()))) for fold, r in zip(folds or ("",), results, strict=True)
  )
  return Run(path, results[0], folds, scores, labels, thresholds, keys, histories=histories)


def _load_seeds(path: Path, seeds: list[Run]) -> Run:
  """One run of the seeds' runs, which must share their dataset, classes and test records."""
  first = seeds[0]
  members = []
  for run in seeds:
    for key in REQUIRED_KEYS:
      if run.results[key] != first.results[key]:
        raise ValueError(f"{path}: seeds disagree on {key!r} ({first.path}, {run.path})")
    first_order, run_order = _aligned_order(first, run)
    scores, thresholds = np.empty_like(run.scores), np.empty_like(run.thresholds)
    scores[first_order], thresholds[first_order] = run.scores[run_order], run.thresholds[run_order]
    members.append((scores, thresholds))
  seed_names = tuple(run.path.name for run in seeds)
  histories = tuple(history for run in seeds for history in run.histories)
  return dataclasses.replace(
    first, path=path, seeds=seed_names, members=tuple(members), histories=histories
  )


def restrict_to_folds(run: Run, folds: Sequence[str]) -> Run:
  """The run with only the test records of ``folds`` (a cross-validated run's ``fold_k`` names)."""
  keep = np.array([key.split("/", 1)[0] in folds for key in run.keys])
  return dataclasses.replace(
    run,
    folds=tuple(fold for fold in run.folds if fold in folds),
    scores=run.scores[keep],
    labels=run.labels[keep],
    thresholds=run.thresholds[keep],
    keys=run.keys[keep],
    members=tuple((scores[keep], thresholds[keep]) for scores, thresholds in run.members),
    histories=tuple((fold, history) for fold, history in run.histories if fold in folds),
  )


def _on_common_folds(runs: Sequence[Run]) -> list[Run]:
  """Cross-validated runs of one dataset restricted to the folds all of them have finished (a
  sweep may still be running), so that every pooled figure and pairing is over the same records;
  the folds left out are named on stderr."""
  common = {}
  for run in runs:
    if run.folds:
      shared = common.get(run.dataset, set(run.folds))
      common[run.dataset] = shared & set(run.folds)
  restricted = []
  for run in runs:
    folds = common.get(run.dataset)
    if run.folds and set(run.folds) != folds:
      left_out = [fold for fold in run.folds if fold not in folds]
      print(
        f"report: {run.path}: {', '.join(left_out)} left out (not finished by every "
        f"cross-validated run of {run.dataset})",
        file=sys.stderr,
      )
      run = restrict_to_folds(run, folds)
    restricted.append(run)
  return restricted


def evaluate_run(run: Run, n_boot: int, seed: int) -> dict:
  """``metrics.evaluate_split`` of the run's pooled test predictions plus ``ci95``; for a run of
  several seeds, the mean over seeds of every figure, with the interval of that mean."""
  per_seed = [
    metrics.evaluate_split(scores, run.labels, run.class_names, thresholds)
    for scores, thresholds in run.runs
  ]
  result = per_seed[0]
  if len(per_seed) > 1:
    result = _mean_of(per_seed)
    result["per_seed_macro_auc"] = [r["macro_auc"] for r in per_seed]
  result["ci95"] = metrics.paired_bootstrap_mean(
    run.runs, [], run.labels, run.class_names, n_boot, seed
  )["ci95"]
  return result


def _mean_of(results: list[dict]) -> dict:
  """The mean of ``metrics.evaluate_split`` results: numbers and per-class numbers averaged."""
  mean = dict(results[0])
  for key, value in results[0].items():
    if isinstance(value, int | float) and not isinstance(value, bool):
      values = [r[key] for r in results]
      mean[key] = None if None in values else float(np.mean(values))
    elif isinstance(value, dict):
      mean[key] = {
        name: None
        if any(r[key][name] is None for r in results)
        else float(np.mean([r[key][name] for r in results]))
        for name in value
      }
  return mean


def _aligned_order(run: Run, baseline: Run) -> tuple[np.ndarray, np.ndarray]:
  """Index arrays putting both runs' test records in the same order; errors if they differ."""
  if run.dataset != baseline.dataset:
    raise ValueError(
      f"cannot compare {run.path} (dataset {run.dataset}) with baseline {baseline.path} "
      f"(dataset {baseline.dataset})"
    )
  if run.class_names != baseline.class_names:
    raise ValueError(f"{run.path} and baseline {baseline.path} have different class_names")
  run_order, base_order = np.argsort(run.keys), np.argsort(baseline.keys)
  if run.keys.shape != baseline.keys.shape or np.any(
    run.keys[run_order] != baseline.keys[base_order]
  ):
    raise ValueError(
      f"{run.path} and baseline {baseline.path} were tested on different records (their "
      "predictions' `index` arrays, per fold, do not match)"
    )
  if np.any(run.labels[run_order] != baseline.labels[base_order]):
    raise ValueError(f"{run.path} and baseline {baseline.path} disagree on test labels")
  return run_order, base_order


def compare_to_baseline(run: Run, baseline: Run, n_boot: int, seed: int) -> dict:
  """Paired bootstrap of run minus baseline on their common test records."""
  run_order, base_order = _aligned_order(run, baseline)
  run_members, base_members = run.runs, baseline.runs
  if run.seeds and baseline.seeds:
    # Seed by seed: the seeds both have (a sweep may still be running).
    common = [seed for seed in run.seeds if seed in baseline.seeds]
    if not common:
      raise ValueError(
        f"{run.path} ({', '.join(run.seeds)}) and baseline {baseline.path} "
        f"({', '.join(baseline.seeds)}) have no training seed in common"
      )
    run_members = [run.members[run.seeds.index(seed)] for seed in common]
    base_members = [baseline.members[baseline.seeds.index(seed)] for seed in common]
  return metrics.paired_bootstrap_mean(
    [(scores[run_order], thresholds[run_order]) for scores, thresholds in run_members],
    [(scores[base_order], thresholds[base_order]) for scores, thresholds in base_members],
    run.labels[run_order],
    run.class_names,
    n_boot,
    seed,
  )


# ------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API renders PNGs with Agg and leaves pyplot's global state alone).


def _slug(dataset: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in dataset)


def _grid(n_panels: int, max_columns: int = 4) -> tuple[int, int]:
  columns = min(n_panels, max_columns)
  return math.ceil(n_panels / columns), columns


def plot_roc(runs: Sequence[Run], out_png: str | Path) -> None:
  """One panel per class, one ROC curve per run (all runs of one dataset)."""
  class_names = runs[0].class_names
  rows, columns = _grid(len(class_names))
  fig = Figure(figsize=(4 * columns, 3.8 * rows), layout="constrained")
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  for c, name in enumerate(class_names):
    ax = axes[c]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for run in runs:
      labels = run.labels[:, c]
      if labels.all() or not labels.any():
        continue
      fpr, tpr, _ = roc_curve(labels, run.scores[:, c])
      auc = metrics.per_class_auc(run.scores[:, c : c + 1], run.labels[:, c : c + 1])[0]
      ax.plot(fpr, tpr, linewidth=1.5, label=f"{run.label}: AUC {auc:.3f}")
    ax.set(title=name, xlabel="False positive rate", ylabel="True positive rate")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.legend(loc="lower right", fontsize="x-small")
  for ax in axes[len(class_names) :]:
    ax.set_visible(False)
  fig.suptitle(f"Test ROC curves per class: {runs[0].dataset}")
  fig.savefig(out_png, dpi=100)


def _error_bars(points: np.ndarray, intervals: Sequence) -> np.ndarray:
  """[2, k] distances below / above each point, 0 where the interval is missing."""
  bounds = np.array(
    [iv if iv is not None else (p, p) for p, iv in zip(points, intervals, strict=True)]
  )
  return np.abs(bounds.T - points)


def plot_f1(runs: Sequence[Run], evaluations: Sequence[dict], out_png: str | Path) -> None:
  """Grouped bars of per-class and macro F1 with 95% CIs, one bar per run."""
  class_names = runs[0].class_names
  groups = [*class_names, "macro"]
  width = 0.8 / len(runs)
  fig = Figure(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(runs) / 2)), 4.5))
  ax = fig.subplots()
  for k, (run, result) in enumerate(zip(runs, evaluations, strict=True)):
    points = np.array([*(result["f1"][name] for name in class_names), result["macro_f1"]])
    intervals = [*(result["ci95"]["f1"][name] for name in class_names), result["ci95"]["macro_f1"]]
    x = np.arange(len(groups)) + (k - (len(runs) - 1) / 2) * width
    ax.bar(x, points, width, yerr=_error_bars(points, intervals), capsize=2, label=run.label)
  ax.set_xticks(np.arange(len(groups)), groups, rotation=45 if len(groups) > 8 else 0)
  ax.set(ylim=(0, 1.05), xlabel="Class", ylabel="F1 on test (thresholds from validation)")
  ax.set_title(f"Per-class F1 with 95% bootstrap CIs: {runs[0].dataset}")
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.savefig(out_png, dpi=100, bbox_inches="tight")


def _lead_sort_key(lead: str) -> tuple[int, str]:
  first = lead.split("+")[0]
  return (STANDARD_LEADS.index(first) if first in STANDARD_LEADS else len(STANDARD_LEADS), lead)


def plot_per_lead(results: list[dict], out_png: str | Path) -> None:
  """Macro AUC by student lead, a bar per method (as the MVKT paper's Fig. 4 on ICBEB2018).

  ``results`` are results.json dicts (``method``, ``dataset``, ``student_leads``,
  ``test.macro_auc`` and optionally ``test.ci95.macro_auc``) of one dataset; each (method, lead)
  pair may occur once.
  """
  if not results:
    raise ValueError("plot_per_lead: no results given")
  datasets = {r["dataset"] for r in results}
  if len(datasets) > 1:
    raise ValueError(f"plot_per_lead: results of several datasets {sorted(datasets)}")
  table: dict[tuple[str, str], tuple[float, list | None]] = {}
  for r in results:
    key = (r["method"], leads_label(r["student_leads"]))
    if key in table:
      raise ValueError(f"plot_per_lead: method {key[0]!r} with leads {key[1]!r} given twice")
    table[key] = (r["test"]["macro_auc"], r["test"].get("ci95", {}).get("macro_auc"))
  methods = list(dict.fromkeys(method for method, _ in table))
  leads = sorted({lead for _, lead in table}, key=_lead_sort_key)
  width = 0.8 / len(methods)
  width_inches = min(16.0, max(6.0, 0.9 * len(leads) * len(methods)))  # 12 leads x 3 fit a page
  fig = Figure(figsize=(width_inches, 4.5), layout="constrained")
  ax = fig.subplots()
  lowest = 1.0
  for k, method in enumerate(methods):
    present = [lead for lead in leads if (method, lead) in table]
    points = np.array([table[method, lead][0] for lead in present])
    intervals = [table[method, lead][1] for lead in present]
    x = np.array([leads.index(lead) for lead in present]) + (k - (len(methods) - 1) / 2) * width
    errors = _error_bars(points, intervals)
    ax.bar(x, points, width, yerr=errors, capsize=3, label=method)
    lowest = min(lowest, float(np.min(points - errors[0])))
  ax.set_xticks(np.arange(len(leads)), leads)
  # Zoom in on the range where the bars differ; the axis label says where it starts.
  ax.set_ylim(max(0.0, math.floor((lowest - 0.05) * 20) / 20), 1.0)
  ax.set(xlabel="Student lead(s)", ylabel="Test macro AUC (axis does not start at 0)")
  ax.set_title(f"Macro AUC by student lead (error bars: 95% CI): {datasets.pop()}")
  ax.legend(title="Method")
  fig.savefig(out_png, dpi=100)


# ------------------------------------------------------------------------------------------------
# Markdown.


def _fmt_ci(point: float | None, interval: Sequence[float] | None, signed: bool = False) -> str:
  if point is None:
    return "n/a"
  spec = "+.3f" if signed else ".3f"
  if interval is None:
    return format(point, spec)
  return f"{point:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _main_table(runs: Sequence[Run], evaluations: Sequence[dict]) -> list[str]:
  datasets = list(dict.fromkeys(run.dataset for run in runs))
  rows = list(dict.fromkeys(run.row for run in runs))
  cells = {(run.row, run.dataset): result for run, result in zip(runs, evaluations, strict=True)}
  header = ["Method", "Leads", "Backbone"]
  for dataset in datasets:
    header += [f"{dataset} AUC", "ACC", "F1"]
  body = []
  for row in rows:
    line = list(row)
    for dataset in datasets:
      result = cells.get((row, dataset))
      if result is None:
        line += ["-", "-", "-"]
        continue
      ci = result["ci95"]
      line += [
        _fmt_ci(result[f"macro_{stat}"], ci[f"macro_{stat}"]) for stat in ("auc", "accuracy", "f1")
      ]
    body.append(line)
  return _table(header, body)


def _per_class_table(
  runs: Sequence[Run], evaluations: Sequence[dict], metric: str, macro_label: str
) -> list[str]:
  """One row per run: ``metric`` ("auc" or "f1") per class, then its macro mean with interval."""
  class_names = runs[0].class_names
  header = ["Method", "Leads", "Backbone", *class_names, macro_label]
  body = [
    [
      *run.row,
      *(_fmt_ci(result[metric][name], None) for name in class_names),
      _fmt_ci(result[f"macro_{metric}"], result["ci95"][f"macro_{metric}"]),
    ]
    for run, result in zip(runs, evaluations, strict=True)
  ]
  return _table(header, body)


def fold_macro_auc(run: Run, fold: str) -> float:
  """Test macro-AUC of one fold of a cross-validated run (mean over its seeds)."""
  keep = np.array([key.split("/", 1)[0] == fold for key in run.keys])
  per_seed = [
    np.nanmean(metrics.per_class_auc(scores[keep], run.labels[keep])) for scores, _ in run.runs
  ]
  return float(np.mean(per_seed))


def _per_fold_table(runs: Sequence[Run], baselines: Sequence[Run]) -> list[str]:
  """Test macro-AUC of every fold of the cross-validated runs (each fold's own test records), and
  in how many folds a run is above its baseline."""
  folds = list(dict.fromkeys(fold for run in runs for fold in run.folds))
  header = ["Method", "Leads", "Backbone", *(f.removeprefix("fold_") for f in folds), "mean (sd)"]
  header.append("folds above baseline")
  by_fold = {run.path: [fold_macro_auc(run, f) for f in folds] for run in runs if run.folds}
  body = []
  for run in runs:
    if run.path not in by_fold:
      continue
    aucs = np.array(by_fold[run.path])
    baseline = None if run in baselines else _matching_baseline(run, baselines)
    above = "-"
    if baseline is not None and baseline.path in by_fold:
      above = f"{int(np.sum(aucs > np.array(by_fold[baseline.path])))} of {len(folds)}"
    cells = [f"{a:.3f}" for a in aucs]
    body.append([*run.row, *cells, f"{aucs.mean():.3f} ({aucs.std(ddof=1):.3f})", above])
  return _table(header, body)


# What a validation entry of results.json's history may hold, and its column name.
HISTORY_METRICS = (
  ("macro_auc", "AUC"),
  ("teacher_kl", "KL to teacher"),
  ("teacher_agreement", "agreement"),
)


def validation_history(run: Run) -> dict[int, dict[str, float]]:
  """Per validated epoch, the mean over the run's folds (and seeds) of each HISTORY_METRICS
  figure; only the epochs and figures every fold recorded."""
  histories = [{entry["epoch"]: entry for entry in history} for _, history in run.histories]
  if not histories or not all(histories):
    return {}
  epochs = sorted(set.intersection(*(set(h) for h in histories)))
  curve = {}
  for epoch in epochs:
    entries = [h[epoch] for h in histories]
    curve[epoch] = {
      key: float(np.mean([e[key] for e in entries]))
      for key, _ in HISTORY_METRICS
      if all(key in e for e in entries)
    }
  return curve


def _history_table(runs: Sequence[Run]) -> list[str]:
  """Validation figures by epoch, each the mean over folds: whether a longer schedule still buys
  validation AUC, or agreement with the teacher. Rows are the epochs of the longest schedule, so
  runs validated every epoch next to runs validated every 5 show every 5th. Empty when no run
  validated more than once."""
  curves = {run.path: validation_history(run) for run in runs}
  shown = [run for run in runs if len(curves[run.path]) > 1]
  if not shown:
    return []
  columns = [
    (run, key, f"{run.name} {title}")
    for run in shown
    for key, title in HISTORY_METRICS
    if any(key in figures for figures in curves[run.path].values())
  ]
  epochs = max((sorted(curves[run.path]) for run in shown), key=lambda e: (e[-1], len(e)))
  body = []
  for epoch in epochs:
    cells = []
    for run, key, _ in columns:
      value = curves[run.path].get(epoch, {}).get(key)
      cells.append("-" if value is None else f"{value:.3f}")
    body.append([str(epoch), *cells])
  return _table(["Epoch", *(title for _, _, title in columns)], body)


def _difference_table(pairs: Sequence[tuple[Run, Run, dict]]) -> list[str]:
  header = ["Method", "Leads", "Backbone", "Baseline", "ΔAUC", "ΔACC", "ΔF1"]
  body = []
  for run, baseline, paired in pairs:
    deltas = [
      _fmt_ci(paired["difference"][key], paired["ci95"][key], signed=True)
      for key in ("macro_auc", "macro_accuracy", "macro_f1")
    ]
    body.append([*run.row, baseline.label, *deltas])
  return _table(header, body)


def _per_class_difference_table(pairs: Sequence[tuple[Run, Run, dict]]) -> list[str]:
  """Per-class paired ΔAUC with intervals: which classes a run gains or loses on."""
  class_names = pairs[0][0].class_names
  header = ["Method", "Leads", "Backbone", "Baseline", *class_names]
  body = [
    [
      *run.row,
      baseline.label,
      *(
        _fmt_ci(paired["difference"]["auc"][name], paired["ci95"]["auc"][name], signed=True)
        for name in class_names
      ),
    ]
    for run, baseline, paired in pairs
  ]
  return _table(header, body)


METHODS_NOTE = (
  "Test metrics with 95% bootstrap percentile intervals ({n_boot} resamples of the test records, "
  "seed {seed}). AUC is the macro ROC AUC over the classes with positive and negative test "
  "records; ACC and F1 are macro means of per-class accuracy and F1 at per-class thresholds chosen "
  "on the validation split (maximum F1) and applied to test. Cross-validated runs pool their "
  "folds' test predictions (each fold binarised with its own validation thresholds) before the "
  "metrics and intervals are computed. A run of several seeds shows the mean over its seeds, and "
  "its interval is that of the mean (every seed scored on the same resamples); it is paired with "
  "the baseline seed by seed."
)


def with_distinct_rows(runs: Sequence[Run]) -> list[Run]:
  """The runs, those without a title that share a row with another run of their dataset titled
  with as many of their workdir's last folders as tell them apart (``mvkt (a/student)``)."""
  rows = [(run.dataset, run.row) for run in runs]
  titled = list(runs)
  for row in dict.fromkeys(row for row in rows if rows.count(row) > 1):
    members = [k for k, other in enumerate(rows) if other == row and runs[k].title is None]
    depth = next(
      depth
      for depth in itertools.count(1)
      if len({runs[k].path.parts[-depth:] for k in members}) == len(members)
    )
    for k in members:
      folders = "/".join(runs[k].path.parts[-depth:])
      titled[k] = dataclasses.replace(runs[k], title=f"{runs[k].name} ({folders})")
  return titled


def _group_by_dataset(runs: Sequence[Run]) -> dict[str, list[int]]:
  """Dataset -> indices of its runs; errors if they disagree on class_names or share a row."""
  groups: dict[str, list[int]] = {}
  for k, run in enumerate(runs):
    groups.setdefault(run.dataset, []).append(k)
  for dataset, members in groups.items():
    names = {tuple(runs[k].class_names) for k in members}
    if len(names) > 1:
      raise ValueError(f"runs of dataset {dataset} have different class_names: {sorted(names)}")
    rows = [runs[k].row for k in members]
    for k in members:
      if rows.count(runs[k].row) > 1:
        raise ValueError(
          f"several runs of dataset {dataset} fill the table row {runs[k].label!r}: "
          f"{[str(runs[j].path) for j in members if runs[j].row == runs[k].row]}; give each "
          "its own --labels"
        )
  return groups


def _baselines_by_dataset(
  baselines: Sequence[Run], datasets: Sequence[str]
) -> dict[str, list[Run]]:
  """Dataset -> its baseline runs (at most one per lead set); every dataset needs one as soon as
  any baseline is given."""
  by_dataset: dict[str, list[Run]] = {}
  for baseline in baselines:
    same = [
      b
      for b in by_dataset.get(baseline.dataset, [])
      if (b.leads, b.crop_len) == (baseline.leads, baseline.crop_len)
    ]
    if same:
      raise ValueError(
        f"two baselines for dataset {baseline.dataset}, leads {baseline.leads} and windows of "
        f"{baseline.crop_len} samples: {same[0].path} and {baseline.path}"
      )
    by_dataset.setdefault(baseline.dataset, []).append(baseline)
  missing = [dataset for dataset in datasets if dataset not in by_dataset]
  if baselines and missing:
    raise ValueError(f"no --baseline run given for dataset(s) {missing}; give one per dataset")
  return by_dataset


def _matching_baseline(run: Run, baselines: Sequence[Run]) -> Run | None:
  """The baseline of the run's own leads (per-lead studies) and windows (crops or whole records),
  else of its leads, else the dataset's only baseline."""
  for matches in (
    lambda b: (b.leads, b.crop_len) == (run.leads, run.crop_len),
    lambda b: b.leads == run.leads,
  ):
    candidates = [b for b in baselines if matches(b)]
    if candidates:
      return candidates[0]
  return baselines[0] if len(baselines) == 1 else None


def _dataset_section(
  runs: Sequence[Run],
  evaluations: Sequence[dict],
  baselines: Sequence[Run],
  out: Path,
  n_boot: int,
  seed: int,
) -> list[str]:
  """Markdown of one dataset (per-class F1, paired differences, figures); writes its PNGs."""
  dataset, slug = runs[0].dataset, _slug(runs[0].dataset)
  lines = ["", f"## {dataset}", "", "### Per-class AUC (test)", ""]
  lines += _per_class_table(runs, evaluations, "auc", "Macro AUC")
  lines += ["", "### Per-class F1 (test)", ""]
  lines += _per_class_table(runs, evaluations, "f1", "Macro F1")
  if baselines:
    matched = [(run, _matching_baseline(run, baselines)) for run in runs if run not in baselines]
    pairs = [
      (run, baseline, compare_to_baseline(run, baseline, n_boot, seed))
      for run, baseline in matched
      if baseline is not None
    ]
    lines += ["", "### Paired bootstrap difference against the baseline (run minus baseline)", ""]
    lines += _difference_table(pairs) if pairs else ["No other run of this dataset."]
    if pairs:
      lines += ["", "### Per-class ΔAUC against the baseline (paired, test)", ""]
      lines += _per_class_difference_table(pairs)
  if len({fold for run in runs for fold in run.folds}) > 1:
    lines += ["", "### Test macro-AUC per fold (each fold's own test records)", ""]
    lines += _per_fold_table(runs, baselines)
  history = _history_table(runs)
  if history:
    lines += ["", "### Validation by epoch (mean over folds; selection is per fold)", ""]
    lines += history
  plot_roc(runs, out / f"roc_{slug}.png")
  plot_f1(runs, evaluations, out / f"f1_{slug}.png")
  lines += ["", f"![ROC curves](roc_{slug}.png)", "", f"![Per-class F1](f1_{slug}.png)"]
  if len({run.leads for run in runs} - {leads_label(None)}) > 1:  # several student lead sets
    results = [
      {**run.results, "method": run.name, "test": result}
      for run, result in zip(runs, evaluations, strict=True)
    ]
    plot_per_lead(results, out / f"per_lead_{slug}.png")
    lines += ["", f"![Macro AUC by lead](per_lead_{slug}.png)"]
  return lines


def write_report(
  workdirs: Sequence[str | Path],
  out: str | Path,
  baselines: Sequence[str | Path] = (),
  n_boot: int = 1000,
  seed: int = 0,
  labels: Sequence[str] = (),
) -> Path:
  """Writes OUT/report.md and its PNGs (baselines are added to the runs); returns the .md path.
  `labels`: row names of the `workdirs`, in order (none: named after the runs)."""
  if labels and len(labels) != len(workdirs):
    raise ValueError(f"{len(labels)} --labels for {len(workdirs)} --workdirs: give one per workdir")
  with cli.output_directory(out, update=True, last="report.md") as staging:
    _write_report(workdirs, staging, baselines, n_boot, seed, labels)
  return Path(out) / "report.md"


def _write_report(
  workdirs: Sequence[str | Path],
  out: Path,
  baselines: Sequence[str | Path],
  n_boot: int,
  seed: int,
  labels: Sequence[str],
) -> None:
  """`write_report` into the new directory `out`."""
  titles = {Path(p).resolve(): label for p, label in zip(workdirs, labels, strict=False)}
  paths = list(dict.fromkeys(Path(p).resolve() for p in [*workdirs, *baselines]))
  runs = [dataclasses.replace(load_run(path), title=titles.get(path)) for path in paths]
  loaded = dict(zip(paths, with_distinct_rows(_on_common_folds(runs)), strict=True))
  runs = list(loaded.values())
  groups = _group_by_dataset(runs)
  baseline_runs = _baselines_by_dataset(
    [loaded[Path(p).resolve()] for p in baselines], list(groups)
  )
  evaluations = [evaluate_run(run, n_boot, seed) for run in runs]
  lines = ["# Run comparison", "", METHODS_NOTE.format(n_boot=n_boot, seed=seed), ""]
  lines += ["## Overall", "", *_main_table(runs, evaluations)]
  pooled = [
    f"- {run.label} on {run.dataset}: pooled over {', '.join(run.folds)}."
    for run in runs
    if run.folds
  ]
  lines += ["", *pooled] if pooled else []
  for dataset, members in groups.items():
    lines += _dataset_section(
      [runs[k] for k in members],
      [evaluations[k] for k in members],
      baseline_runs.get(dataset, []),
      out,
      n_boot,
      seed,
    )
  (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.ArgumentParser(prog="python -m lead_kt.report", description=__doc__.split("\n")[0])
  parser.add_argument("--workdirs", nargs="+", required=True, help="run (or fold-parent) dirs")
  parser.add_argument("--out", required=True, help="output directory for report.md and PNGs")
  parser.add_argument(
    "--baseline",
    nargs="+",
    default=[],
    help="baseline run dir(s): one per dataset, or one per dataset and lead set (per-lead studies:"
    " each run is paired with the baseline of its own leads)",
  )
  parser.add_argument(
    "--labels", nargs="+", default=[], help="row names of the --workdirs, one each, in order"
  )
  parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  args = parser.parse_args(argv)
  try:
    report = write_report(
      args.workdirs, args.out, args.baseline, args.n_boot, args.seed, args.labels
    )
  except (cli.CliError, ValueError, OSError) as error:
    return cli.report(error)
  print(f"wrote {report}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
