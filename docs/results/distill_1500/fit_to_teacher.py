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

import jax
import numpy as np

from lead_kt import input_pipeline, predict, sharding, train


def split_logits(run_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-record logits of the run's best network on `split` of its own dataset, and labels."""
  predictor = predict.Predictor(run_dir)
  config = predictor.config
  info = input_pipeline.dataset_info(config.data)
  normalizer = input_pipeline.load_or_fit_normalizer(
    config.data, str(Path(predictor.run_dir) / "normalization.json")
  )
  mesh = sharding.make_mesh(config.mesh.model)
  params, state = jax.device_put((predictor.params, predictor.state), sharding.replicated(mesh))
  outputs = train._evaluate(
    jax.jit(predictor.method.predict),
    predictor.method,
    config,
    info,
    normalizer,
    sharding.batch_sharding(mesh),
    params,
    state,
    split,
  )
  p = np.clip(outputs.scores, 1e-6, 1 - 1e-6)
  return np.log(p / (1 - p)), outputs.labels


def main(root: str, *students: str) -> None:
  root = Path(root)
  folds = sorted(
    p.name
    for p in (root / "teacher").glob("fold_*")
    if all((root / name / p.name / "results.json").exists() for name in ("teacher", *students))
  )
  print(f"folds: {', '.join(folds)}")
  for split in ("train", "validation", "test"):
    teacher = [split_logits(root / "teacher" / fold, split)[0] for fold in folds]
    teacher = np.concatenate(teacher)
    for name in students:
      student = np.concatenate([split_logits(root / name / fold, split)[0] for fold in folds])
      r = [np.corrcoef(teacher[:, c], student[:, c])[0, 1] for c in range(teacher.shape[1])]
      print(
        f"{split:10s} {name:12s} " + " ".join(f"{v:.2f}" for v in r) + f" | mean {np.mean(r):.2f}"
      )


if __name__ == "__main__":
  main(*sys.argv[1:])
