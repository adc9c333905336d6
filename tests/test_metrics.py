"""lead_kt.metrics against hand-computed cases and brute-force references."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from lead_kt import metrics

CLASSES = ["A", "B"]


def _random_case(rng, n, num_classes, positive_rate=0.3):
  labels = (rng.random((n, num_classes)) < positive_rate).astype(np.int64)
  scores = np.round(rng.random((n, num_classes)), 1)  # rounded so that ties occur
  return scores, labels


def _noisy_scores(rng, labels, noise):
  return 1 / (1 + np.exp(-(labels - 0.5) * 2 + noise * rng.standard_normal(labels.shape)))


def test_auc_hand_case_with_ties_and_skipped_class():
  # Class A: pairs (pos, neg) = (0.4, 0.1) 1, (0.4, 0.4) 1/2, (0.8, 0.1) 1, (0.8, 0.4) 1 -> 3.5 / 4.
  # Class B has no positives: skipped and reported, left out of the macro average.
  scores = np.array([[0.1, 0.3], [0.4, 0.2], [0.4, 0.9], [0.8, 0.5]])
  labels = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
  result = metrics.evaluate_split(scores, labels, CLASSES)
  assert result["auc"] == {"A": 0.875, "B": None}
  assert result["macro_auc"] == 0.875
  assert result["skipped_classes"] == ["B"]
  assert result["n_records"] == 4


def test_thresholds_chosen_on_validation_applied_to_test():
  # Validation, F1 = 2 TP / (#predicted + #positive) with 3 positives:
  # t=0.9: 2/4, 0.8: 2/5, 0.7: 4/6, 0.6: 6/7 (best), 0.3: 6/8, 0.2: 6/9.
  val_scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])[:, None]
  val_labels = np.array([1, 0, 1, 1, 0, 0])[:, None]
  thresholds = metrics.choose_thresholds(val_scores, val_labels)
  np.testing.assert_array_equal(thresholds, [0.6])
  # Test: score 0.6 equals the threshold and counts as positive -> predictions 1 1 1 0 0.
  # TP 2, FP 1, FN 1, TN 1.
  test_scores = np.array([0.95, 0.65, 0.6, 0.5, 0.1])[:, None]
  test_labels = np.array([1, 0, 1, 1, 0])[:, None]
  result = metrics.evaluate_split(test_scores, test_labels, ["A"], thresholds)
  assert result["precision"]["A"] == pytest.approx(2 / 3)
  assert result["recall"]["A"] == pytest.approx(2 / 3)
  assert result["f1"]["A"] == pytest.approx(2 / 3)
  assert result["accuracy"]["A"] == pytest.approx(3 / 5)
  assert result["macro_f1"] == pytest.approx(2 / 3)
  assert result["macro_accuracy"] == pytest.approx(3 / 5)


def test_threshold_ties():
  # Equal scores fall on the same side: at 0.5 both tied records are predicted (F1 2/3 > 1/2).
  tied = metrics.choose_thresholds(np.array([[0.5], [0.5], [0.2]]), np.array([[1], [0], [0]]))
  np.testing.assert_array_equal(tied, [0.5])
  # Equal F1 (2/3 at 0.9 and at 0.3): the highest threshold wins.
  equal_f1 = metrics.choose_thresholds(
    np.array([[0.9], [0.5], [0.4], [0.3]]), np.array([[1], [0], [0], [1]])
  )
  np.testing.assert_array_equal(equal_f1, [0.9])
  # No validation positives: the threshold lies above every validation score.
  none = metrics.choose_thresholds(np.array([[0.2], [0.7]]), np.array([[0], [0]]))
  assert none[0] > 0.7


def test_choose_thresholds_maximises_f1_brute_force():
  rng = np.random.default_rng(0)
  scores, labels = _random_case(rng, 40, 4)
  thresholds = metrics.choose_thresholds(scores, labels)
  for c in range(4):
    best = max(f1_score(labels[:, c], scores[:, c] >= t) for t in np.unique(scores[:, c]))
    assert f1_score(labels[:, c], scores[:, c] >= thresholds[c]) == pytest.approx(best)


def test_threshold_metrics_match_sklearn():
  rng = np.random.default_rng(1)
  for num_classes in (1, 3):  # one class is where sklearn's multilabel input turns binary
    scores, labels = _random_case(rng, 30, num_classes)
    thresholds = rng.random(num_classes)
    result = metrics.threshold_metrics(scores, labels, thresholds)
    for c in range(num_classes):
      predicted = scores[:, c] >= thresholds[c]
      p, r, f, _ = precision_recall_fscore_support(
        labels[:, c], predicted, average="binary", zero_division=0
      )
      assert (result["precision"][c], result["recall"][c], result["f1"][c]) == pytest.approx(
        (p, r, f)
      )
      assert result["accuracy"][c] == pytest.approx(np.mean(predicted == labels[:, c]))


def test_fmax_hand_case():
  # t=0.9: P=1 (record 0 only), R=(1/2+0)/2 -> F=0.4; t=0.7: P=1, R=3/4 -> 6/7;
  # t=0.6: P=(1+1/2)/2, R=3/4 -> 3/4; t=0.2: P=3/4, R=1 -> 6/7 (tie: the higher 0.7 is returned).
  scores = np.array([[0.9, 0.2], [0.6, 0.7]])
  labels = np.array([[1, 1], [0, 1]])
  value, threshold = metrics.fmax(scores, labels)
  assert value == pytest.approx(6 / 7)
  assert threshold == 0.7


def _brute_force_fmax(scores, labels):
  labels = labels.astype(bool)
  best = 0.0
  for t in np.unique(scores):
    predicted = scores >= t
    any_pred, any_true = predicted.any(axis=1), labels.any(axis=1)
    tp = (predicted & labels).sum(axis=1)
    precision = (tp[any_pred] / predicted.sum(axis=1)[any_pred]).mean() if any_pred.any() else 0
    recall = (tp[any_true] / labels.sum(axis=1)[any_true]).mean()
    if precision + recall > 0:
      best = max(best, 2 * precision * recall / (precision + recall))
  return best


def test_fmax_matches_brute_force():
  rng = np.random.default_rng(2)
  for _ in range(10):
    scores, labels = _random_case(rng, int(rng.integers(3, 25)), int(rng.integers(1, 5)), 0.4)
    labels[0] = 1  # at least one record with a true class
    assert metrics.fmax(scores, labels)[0] == pytest.approx(_brute_force_fmax(scores, labels))


def test_weighted_auc_equals_auc_of_explicit_resample():
  rng = np.random.default_rng(3)
  scores, labels = _random_case(rng, 60, 1)
  draws = rng.integers(0, 60, size=60)
  weights = np.bincount(draws, minlength=60)[None].astype(float)
  auc = metrics._weighted_auc(scores[:, 0], labels[:, 0].astype(bool), weights)
  assert auc[0] == pytest.approx(roc_auc_score(labels[draws, 0], scores[draws, 0]))


def test_bootstrap_weights_redraw_until_both_labels_present():
  labels = np.zeros((30, 2))
  labels[0, 0] = 1  # a single positive: ~37% of plain resamples miss it
  labels[::2, 1] = 1
  weights = np.concatenate(list(metrics.bootstrap_weights(labels, 300, seed=0)))
  assert weights.shape == (300, 30)
  np.testing.assert_array_equal(weights.sum(axis=1), 30)
  assert np.all(weights[:, 0] > 0)  # every resample holds the lone positive


def test_bootstrap_ci_reproducible_and_contains_point():
  rng = np.random.default_rng(4)
  labels = (rng.random((300, 3)) < 0.3).astype(int)
  scores = _noisy_scores(rng, labels, 1.5)
  thresholds = np.full(3, 0.5)
  first = metrics.bootstrap_ci(scores, labels, thresholds, ["a", "b", "c"], n_boot=200, seed=7)
  again = metrics.bootstrap_ci(scores, labels, thresholds, ["a", "b", "c"], n_boot=200, seed=7)
  other = metrics.bootstrap_ci(scores, labels, thresholds, ["a", "b", "c"], n_boot=200, seed=8)
  assert first == again
  assert first != other
  point = metrics.evaluate_split(scores, labels, ["a", "b", "c"], thresholds)
  for key in ("macro_auc", "macro_accuracy", "macro_f1"):
    lower, upper = first[key]
    assert lower < point[key] < upper
  for name in "abc":
    assert first["auc"][name][0] < point["auc"][name] < first["auc"][name][1]


def test_paired_bootstrap_self_is_zero_and_better_model_positive():
  rng = np.random.default_rng(5)
  labels = (rng.random((400, 2)) < 0.4).astype(int)
  good = _noisy_scores(rng, labels, 0.8)
  poor = _noisy_scores(rng, labels, 3.0)
  thresholds = np.full(2, 0.5)
  same = metrics.paired_bootstrap(good, thresholds, good, thresholds, labels, CLASSES, 200, 0)
  for key in ("macro_auc", "macro_accuracy", "macro_f1"):
    assert same["difference"][key] == 0
    assert same["ci95"][key] == [0, 0]
  better = metrics.paired_bootstrap(good, thresholds, poor, thresholds, labels, CLASSES, 200, 0)
  for key in ("macro_auc", "macro_f1"):
    assert better["ci95"][key][0] > 0
    assert better["ci95"][key][0] < better["difference"][key] < better["ci95"][key][1]


def test_summarize_is_json_and_complete():
  rng = np.random.default_rng(6)
  val_labels = (rng.random((100, 2)) < 0.4).astype(int)
  test_labels = (rng.random((120, 2)) < 0.4).astype(int)
  summary = metrics.summarize(
    _noisy_scores(rng, val_labels, 1.0),
    val_labels,
    _noisy_scores(rng, test_labels, 1.0),
    test_labels,
    CLASSES,
    n_boot=100,
  )
  decoded = json.loads(json.dumps(summary, allow_nan=False))
  assert set(decoded["thresholds"]) == set(CLASSES)
  for key in ("macro_auc", "fmax", "macro_accuracy", "macro_precision", "macro_recall"):
    assert 0 <= decoded[key] <= 1
  assert set(decoded["ci95"]) == {"macro_auc", "macro_accuracy", "macro_f1", "auc", "f1"}
  assert decoded["bootstrap"]["n_boot"] == 100


@pytest.mark.parametrize(
  ("scores", "labels", "message"),
  [
    (np.zeros((3, 2)), np.zeros((3, 1)), "does not match"),
    (np.zeros(3), np.zeros(3), r"\[n, C\]"),
    (np.zeros((2, 2)), np.full((2, 2), 2), "multi-hot"),
    (np.full((2, 2), np.nan), np.zeros((2, 2)), "NaN"),
  ],
)
def test_bad_input_errors(scores, labels, message):
  with pytest.raises(ValueError, match=message):
    metrics.evaluate_split(scores, labels, ["x"] * np.shape(scores)[-1])


def test_class_names_length_checked():
  with pytest.raises(ValueError, match="class_names"):
    metrics.evaluate_split(np.zeros((2, 2)), np.zeros((2, 2)), ["only one"])
