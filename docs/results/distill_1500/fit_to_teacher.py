"""How closely each lead-I student follows the 12-lead teacher, class by class and split by split.

For every fold with a teacher, a baseline and a student run, each run's best network scores the
train, validation and test records (windows aggregated as evaluation does); the figure is the
Pearson correlation of the student's and the teacher's per-record logits, pooled over the folds.
A student that learned the teacher's function follows it on the records it was taught on (train)
and on new ones (validation, test); a baseline never saw the teacher and shows how much of it the
labels alone carry.

  python docs/results/distill_1500/fit_to_teacher.py /work/runs/distill_1500 baseline_fm kd_fm
"""

import sys
from pathlib import Path

import numpy as np

from lead_kt import evaluate, input_pipeline, predict

SPLITS = ("train", "validation", "test")


def split_logits(run_dir: Path) -> dict[str, np.ndarray]:
  """Per-record logits of the run's best network on each split of its own dataset."""
  predictor = predict.Predictor(run_dir)
  info = input_pipeline.dataset_info(predictor.config.data)
  outputs = evaluate.score_splits(predictor, predictor.config, info, SPLITS)
  logits = {}
  for split, scored in zip(SPLITS, outputs, strict=True):
    p = np.clip(scored.scores, 1e-6, 1 - 1e-6)
    logits[split] = np.log(p / (1 - p))
  return logits


def main(root: str, *students: str) -> None:
  root = Path(root)
  folds = sorted(
    p.name
    for p in (root / "teacher").glob("fold_*")
    if all((root / name / p.name / "results.json").exists() for name in ("teacher", *students))
  )
  print(f"folds: {', '.join(folds)}")
  # Each run is loaded and scored once; the splits are pooled over the folds afterwards.
  runs = {
    name: [split_logits(root / name / fold) for fold in folds] for name in ("teacher", *students)
  }
  for split in SPLITS:
    teacher = np.concatenate([fold[split] for fold in runs["teacher"]])
    for name in students:
      student = np.concatenate([fold[split] for fold in runs[name]])
      r = [np.corrcoef(teacher[:, c], student[:, c])[0, 1] for c in range(teacher.shape[1])]
      print(
        f"{split:10s} {name:12s} " + " ".join(f"{v:.2f}" for v in r) + f" | mean {np.mean(r):.2f}"
      )


if __name__ == "__main__":
  main(*sys.argv[1:])
