"""Evaluation metrics for multi-label ECG classification (numpy / scikit-learn, no JAX).

Every function takes ``scores`` [n, C] (probabilities; any real scores work where only their order
matters) and ``labels`` [n, C] (multi-hot, 0/1) for n records and C classes.

Conventions (the same everywhere in this module):
- AUC is computed only for classes that have both positives and negatives in the evaluated records;
  the others are "skipped" (reported by name, AUC ``None``) and left out of every macro average.
- A record is predicted positive for class c when ``score >= threshold[c]``. Records with equal
  scores therefore always fall on the same side of a threshold, and AUC counts a tied
  positive/negative pair as half a correctly ordered pair (the Mann-Whitney convention).
- Per-class thresholds are chosen on the validation split to maximise that class's F1 and then
  applied unchanged to test (the ACC and F1 of the MVKT-ECG paper's tables). Candidates are the
  distinct validation scores; among thresholds with equal F1 the highest wins (fewest positive
  predictions). A class without validation positives (F1 is 0 everywhere) gets a threshold just
  above its highest validation score.
- Macro accuracy / precision / recall / F1 are means of the per-class values over the evaluated
  (non-skipped) classes; precision, recall and F1 are 0 where their denominator is 0. (Unlike the
  PTB-XL benchmark's ``apply_thresholds``, a record with no score above threshold is not forced to
  its top class.)
- Bootstrap (95% percentile intervals over test records): like the PTB-XL benchmark
  (``get_appropriate_bootstrap_samples`` in Strodthoff et al.'s code, which redraws a resample until
  every class has at least one positive), a resample is redrawn until every evaluated class has at
  least one positive and one negative, so every resample averages over the same classes. A resample
  is held as per-record multiplicities, so all resamples are scored at once with weighted sums and
  a weighted rank AUC (no per-resample sklearn calls).
"""

from collections.abc import Iterator, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

CI_LEVEL = 0.95
# Resamples are drawn this many at a time so that pooled cross-validation test sets (~22k records)
# keep the [chunk, n] weight matrices small.
_CHUNK = 128
# Give up when this many times n_boot resamples had to be rejected (a class with ~0 positives).
_MAX_REDRAW_FACTOR = 100


def _check_inputs(
  scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [n, C], got shape {scores.shape}")
  if labels.shape != scores.shape:
    raise ValueError(f"labels shape {labels.shape} does not match scores shape {scores.shape}")
  if scores.shape[0] == 0:
    raise ValueError("scores and labels hold no records")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contain NaN or infinite values")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError("labels must be multi-hot (only 0 and 1)")
  if class_names is not None and len(class_names) != scores.shape[1]:
    raise ValueError(f"{len(class_names)} class_names given for {scores.shape[1]} score columns")
  return scores, labels.astype(bool)


def _broadcast_thresholds(thresholds, shape: tuple[int, int]) -> np.ndarray:
  thresholds = np.asarray(thresholds, dtype=np.float64)
  if thresholds.shape not in ((shape[1],), shape):
    raise ValueError(f"thresholds must be [C] or [n, C] for scores {shape}, got {thresholds.shape}")
  return np.broadcast_to(thresholds, shape)


def evaluated_classes(labels: np.ndarray) -> np.ndarray:
  """Bool [C]: classes with at least one positive and one negative among the records [n, C]."""
  labels = np.asarray(labels, dtype=bool)
  return labels.any(axis=0) & ~labels.all(axis=0)


def per_class_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """ROC AUC per class, float [C]; NaN for classes without both positives and negatives."""
  scores, labels = _check_inputs(scores, labels)
  auc = np.full(scores.shape[1], np.nan)
  for c in np.flatnonzero(evaluated_classes(labels)):
    auc[c] = roc_auc_score(labels[:, c], scores[:, c])
  return auc


def choose_thresholds(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-class thresholds [C] maximising each class's F1 on these (validation) records.

  Exact over all distinct scores; see the module docstring for ties and classes without positives.
  """
  scores, labels = _check_inputs(scores, labels)
  thresholds = np.empty(scores.shape[1])
  for c in range(scores.shape[1]):
    order = np.argsort(-scores[:, c], kind="stable")
    sorted_scores = scores[order, c]
    true_pos = np.cumsum(labels[order, c])
    # Threshold = the score closing each tie group: everything up to that position is predicted.
    group_end = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    n_pos = labels[:, c].sum()
    if n_pos == 0:
      thresholds[c] = np.nextafter(sorted_scores[0], np.inf)
      continue
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (#predicted + #positive).
    f1 = 2 * true_pos[group_end] / (group_end + 1 + n_pos)
    thresholds[c] = sorted_scores[group_end[np.argmax(f1)]]  # first maximum = highest threshold
  return thresholds


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, thresholds) -> dict[str, np.ndarray]:
  """Accuracy, precision, recall and F1 per class (float [C] each) at ``score >= thresholds``.

  ``thresholds`` is [C], or [n, C] for pooled folds that each bring their own thresholds.
  """
  scores, labels = _check_inputs(scores, labels)
  thresholds = _broadcast_thresholds(thresholds, scores.shape)
  counts = _confusion_metrics(scores >= thresholds, labels, np.ones((1, scores.shape[0])))
  return {name: values[0] for name, values in counts.items()}


def _confusion_metrics(
  predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
  """Accuracy, precision, recall, F1 [b, C] of bool predictions [n, C] under weights [b, n]."""
  outcomes = np.concatenate(
    [predicted & labels, predicted & ~labels, ~predicted & labels, predicted == labels], axis=1
  )
  # One float matmul (bool operands would miss BLAS).
  true_pos, false_pos, false_neg, correct = np.split(weights @ outcomes.astype(np.float64), 4, 1)
  return {
    "accuracy": correct / weights.sum(axis=1, keepdims=True),
    "precision": _safe_ratio(true_pos, true_pos + false_pos),
    "recall": _safe_ratio(true_pos, true_pos + false_neg),
    "f1": _safe_ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
  }


def fmax(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """Sample-centric Fmax and the threshold reaching it: ``(fmax, threshold)``.

  For a threshold t (predict ``score >= t``), precision is averaged over the records with at least
  one predicted class and recall over the records with at least one true class (all records in the
  PTB-XL benchmark tasks); Fmax is the maximum over t of their harmonic mean. Exact: every distinct
  score is tried, by switching predictions on one (record, class) entry at a time in descending
  score order and updating the running sums, O(nC log nC).
  """
  scores, labels = _check_inputs(scores, labels)
  n, num_classes = scores.shape
  order = np.argsort(-scores.ravel(), kind="stable")
  flat_scores = scores.ravel()[order]
  flat_labels = labels.ravel()[order].astype(np.float64)
  record = order // num_classes
  # Running per-record counts of predicted entries and true positives, in the global order.
  by_record = np.argsort(record, kind="stable")
  n_predicted = np.empty(n * num_classes)
  n_predicted[by_record] = np.tile(np.arange(1, num_classes + 1), n)
  true_pos = np.empty(n * num_classes)
  true_pos[by_record] = _grouped_cumsum(flat_labels[by_record], num_classes)
  precision_before = np.where(
    n_predicted > 1, (true_pos - flat_labels) / np.maximum(n_predicted - 1, 1), 0.0
  )
  precision_sum = np.cumsum(true_pos / n_predicted - precision_before)
  records_predicted = np.cumsum(n_predicted == 1)
  n_true = labels.sum(axis=1)
  recall_sum = np.cumsum(flat_labels / np.maximum(n_true[record], 1))
  precision = precision_sum / records_predicted
  recall = recall_sum / max(int((n_true > 0).sum()), 1)
  group_end = np.flatnonzero(np.r_[flat_scores[1:] != flat_scores[:-1], True])
  p, r = precision[group_end], recall[group_end]
  f = _safe_ratio(2 * p * r, p + r)
  best = int(np.argmax(f))
  return float(f[best]), float(flat_scores[group_end[best]])


def _grouped_cumsum(values: np.ndarray, group_size: int) -> np.ndarray:
  """Cumulative sums restarting every ``group_size`` entries of a flat array."""
  return np.cumsum(values.reshape(-1, group_size), axis=1).ravel()


def _json_float(value) -> float | None:
  value = float(value)
  return None if np.isnan(value) else value


def _per_class(names: Sequence[str], values) -> dict[str, float | None]:
  return {name: _json_float(v) for name, v in zip(names, values, strict=True)}


def evaluate_split(
  scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], thresholds=None
) -> dict:
  """Point metrics of one split as a JSON-able dict.

  Always: ``n_records``, ``macro_auc``, ``auc`` {class: AUC or None}, ``skipped_classes``, ``fmax``,
  ``fmax_threshold``. With ``thresholds`` ([C], or [n, C] for pooled folds) also ``accuracy``,
  ``precision``, ``recall``, ``f1`` {class: value} and their ``macro_*`` means over the
  evaluated classes. ``macro_auc`` is None when no class can be evaluated.
  """
  scores, labels = _check_inputs(scores, labels, class_names)
  evaluated = evaluated_classes(labels)
  auc = per_class_auc(scores, labels)
  fmax_value, fmax_threshold = fmax(scores, labels)
  result = {
    "n_records": int(scores.shape[0]),
    "macro_auc": _json_float(auc[evaluated].mean()) if evaluated.any() else None,
    "auc": _per_class(class_names, auc),
    "skipped_classes": [name for name, ok in zip(class_names, evaluated, strict=True) if not ok],
    "fmax": fmax_value,
    "fmax_threshold": fmax_threshold,
  }
  if thresholds is not None:
    for name, values in threshold_metrics(scores, labels, thresholds).items():
      result[name] = _per_class(class_names, values)
      result[f"macro_{name}"] = _json_float(values[evaluated].mean()) if evaluated.any() else None
  return result


def bootstrap_weights(labels: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
  """Yields float [b, n] resample multiplicities (rows sum to n), n_boot rows in all.

  A resample draws n records with replacement; row j holds how often each record was drawn.
  Resamples lacking a positive or a negative for an evaluated class are redrawn (module docstring).
  The sequence depends only on (labels, n_boot, seed).
  """
  labels = np.asarray(labels, dtype=np.float64)
  if n_boot < 1:
    raise ValueError(f"n_boot must be >= 1, got {n_boot}")
  n = labels.shape[0]
  evaluated = evaluated_classes(labels)
  if not evaluated.any():
    raise ValueError("bootstrap: no class has both positive and negative records")
  rng = np.random.default_rng(seed)
  delivered, drawn = 0, 0
  while delivered < n_boot:
    if drawn > _MAX_REDRAW_FACTOR * n_boot:
      raise ValueError(
        f"bootstrap: could not draw {n_boot} resamples with both labels in every evaluated class "
        f"after {drawn} draws (too few positives or negatives in some class of {n} records)"
      )
    draws = rng.integers(0, n, size=(_CHUNK, n))
    offsets = (np.arange(_CHUNK) * n)[:, None]
    weights = np.bincount((draws + offsets).ravel(), minlength=_CHUNK * n).reshape(_CHUNK, n)
    weights = weights.astype(np.float64)
    positives = (weights @ labels)[:, evaluated]
    valid = np.all((positives > 0) & (positives < n), axis=1)
    drawn += _CHUNK
    kept = weights[valid][: n_boot - delivered]
    delivered += kept.shape[0]
    if kept.shape[0]:
      yield kept


def _weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """AUC of one class (scores, bool labels [n]) under record weights [b, n] -> [b].

  Mann-Whitney with weights: each positive contributes its weight times the negative weight scored
  below it plus half the negative weight tied with it; divided by total positive x negative weight.
  """
  order = np.argsort(scores, kind="stable")
  sorted_scores, is_pos = scores[order], labels[order]
  new_group = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
  group_bounds = np.r_[np.flatnonzero(new_group), len(scores)]
  group = np.cumsum(new_group) - 1
  # Negatives among the first k sorted records, and their cumulative weight [b, n_neg + 1].
  negatives_before = np.r_[0, np.cumsum(~is_pos)]
  negative_weight = np.zeros((weights.shape[0], negatives_before[-1] + 1))
  np.cumsum(weights[:, order[~is_pos]], axis=1, out=negative_weight[:, 1:])
  positions = np.flatnonzero(is_pos)
  below = negative_weight[:, negatives_before[group_bounds[group[positions]]]]
  below_or_tied = negative_weight[:, negatives_before[group_bounds[group[positions] + 1]]]
  positive_weight = weights[:, order[positions]]
  numerator = 0.5 * (positive_weight * (below + below_or_tied)).sum(axis=1)
  return numerator / (positive_weight.sum(axis=1) * negative_weight[:, -1])


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


def _weighted_metrics(
  scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
  """Per-class AUC (NaN if skipped) and confusion metrics [b, C] under weights [b, n]."""
  evaluated = evaluated_classes(labels)
  auc = np.full((weights.shape[0], scores.shape[1]), np.nan)
  for c in np.flatnonzero(evaluated):
    auc[:, c] = _weighted_auc(scores[:, c], labels[:, c], weights)
  return {"auc": auc, **_confusion_metrics(scores >= thresholds, labels, weights)}


def _resample_statistics(scores, labels, thresholds, weights) -> dict[str, np.ndarray]:
  """The bootstrapped statistics: macro_* [b] and per-class auc / f1 [b, C]."""
  per_class = _weighted_metrics(scores, labels, thresholds, weights)
  evaluated = evaluated_classes(labels)
  return {
    "macro_auc": per_class["auc"][:, evaluated].mean(axis=1),
    "macro_accuracy": per_class["accuracy"][:, evaluated].mean(axis=1),
    "macro_f1": per_class["f1"][:, evaluated].mean(axis=1),
    "auc": per_class["auc"],
    "f1": per_class["f1"],
  }


def _interval(samples: np.ndarray) -> np.ndarray:
  """Percentile interval over axis 0: [2, ...] (lower, upper)."""
  tail = 100 * (1 - CI_LEVEL) / 2
  return np.percentile(samples, [tail, 100 - tail], axis=0)


def _intervals_json(samples: dict[str, np.ndarray], class_names: Sequence[str]) -> dict:
  result = {}
  for key, values in samples.items():
    lower, upper = _interval(values)
    if values.ndim == 1:
      result[key] = [_json_float(lower), _json_float(upper)]
    else:
      result[key] = {
        name: None if np.isnan(lo) else [float(lo), float(hi)]
        for name, lo, hi in zip(class_names, lower, upper, strict=True)
      }
  return result


def _bootstrap_samples(
  models: Sequence[tuple[np.ndarray, np.ndarray]], labels, n_boot: int, seed: int
) -> list[dict[str, np.ndarray]]:
  """Resampled statistics of several models (scores, thresholds) on the same resamples."""
  chunks = [[] for _ in models]
  for weights in bootstrap_weights(labels, n_boot, seed):
    for per_model, (scores, thresholds) in zip(chunks, models, strict=True):
      per_model.append(_resample_statistics(scores, labels, thresholds, weights))
  return [
    {key: np.concatenate([c[key] for c in per_model]) for key in per_model[0]}
    for per_model in chunks
  ]


def bootstrap_ci(
  scores: np.ndarray,
  labels: np.ndarray,
  thresholds,
  class_names: Sequence[str],
  n_boot: int = 1000,
  seed: int = 0,
) -> dict:
  """95% bootstrap percentile intervals over records, JSON-able.

  Keys ``macro_auc``, ``macro_accuracy``, ``macro_f1`` -> [lower, upper]; ``auc``, ``f1`` ->
  {class: [lower, upper] or None for skipped classes}. ``thresholds`` is [C] or [n, C].
  """
  scores, labels = _check_inputs(scores, labels, class_names)
  thresholds = _broadcast_thresholds(thresholds, scores.shape)
  (samples,) = _bootstrap_samples([(scores, thresholds)], labels, n_boot, seed)
  return _intervals_json(samples, class_names)


def paired_bootstrap(
  scores_a: np.ndarray,
  thresholds_a,
  scores_b: np.ndarray,
  thresholds_b,
  labels: np.ndarray,
  class_names: Sequence[str],
  n_boot: int = 1000,
  seed: int = 0,
) -> dict:
  """Difference model A minus model B on the same records, with a paired 95% bootstrap interval.

  Both models are scored on identical resamples. Returns JSON-able
  ``{"n_boot", "seed", "difference": {stat: point}, "ci95": {stat: [lower, upper]}}`` for stat in
  macro_auc, macro_accuracy, macro_f1 (points from the full records), plus per-class ``auc``/``f1``
  differences and intervals as {class: ...}.
  """
  return paired_bootstrap_mean(
    [(scores_a, thresholds_a)], [(scores_b, thresholds_b)], labels, class_names, n_boot, seed
  )


def paired_bootstrap_mean(
  models_a: Sequence[tuple[np.ndarray, object]],
  models_b: Sequence[tuple[np.ndarray, object]],
  labels: np.ndarray,
  class_names: Sequence[str],
  n_boot: int = 1000,
  seed: int = 0,
) -> dict:
  """``paired_bootstrap`` of the mean over runs: mean of ``models_a`` minus mean of ``models_b``
  (each a list of (scores, thresholds), e.g. one per training seed, all on the same records).

  Every run is scored on the same record resamples, so the interval covers the test records'
  sampling with the seeds' spread averaged in. With ``models_b`` empty, the mean of A itself.
  """
  models = []
  for scores, thresholds in (*models_a, *models_b):
    scores, labels_checked = _check_inputs(scores, labels, class_names)
    models.append((scores, _broadcast_thresholds(thresholds, scores.shape)))
  samples = _bootstrap_samples(models, labels_checked, n_boot, seed)
  unit = np.ones((1, labels_checked.shape[0]))
  points = [_resample_statistics(s, labels_checked, t, unit) for s, t in models]
  count_a = len(models_a)

  def mean_difference(per_model: list[dict]) -> dict:
    a = {k: np.mean([m[k] for m in per_model[:count_a]], axis=0) for k in per_model[0]}
    if count_a == len(per_model):
      return a
    b = {k: np.mean([m[k] for m in per_model[count_a:]], axis=0) for k in per_model[0]}
    return {k: a[k] - b[k] for k in a}

  difference = {}
  for key, delta in mean_difference(points).items():
    delta = delta[0]
    difference[key] = _json_float(delta) if delta.ndim == 0 else _per_class(class_names, delta)
  return {
    "n_boot": n_boot,
    "seed": seed,
    "runs": [count_a, len(models) - count_a],
    "difference": difference,
    "ci95": _intervals_json(mean_difference(samples), class_names),
  }


def summarize(
  val_scores: np.ndarray,
  val_labels: np.ndarray,
  test_scores: np.ndarray,
  test_labels: np.ndarray,
  class_names: Sequence[str],
  n_boot: int = 1000,
  seed: int = 0,
) -> dict:
  """The test section of a run's results.json.

  Thresholds are chosen on validation (``choose_thresholds``) and applied to test. Returns
  ``evaluate_split`` of test with those thresholds, plus ``thresholds`` {class: value} and
  ``ci95`` (``bootstrap_ci``) and ``bootstrap`` {"n_boot", "seed"}.
  """
  _check_inputs(val_scores, val_labels, class_names)
  thresholds = choose_thresholds(val_scores, val_labels)
  result = evaluate_split(test_scores, test_labels, class_names, thresholds)
  result["thresholds"] = _per_class(class_names, thresholds)
  result["ci95"] = bootstrap_ci(test_scores, test_labels, thresholds, class_names, n_boot, seed)
  result["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": CI_LEVEL}
  return result
