"""Distillation that closes the gap: function matching, out-of-fold and ensemble teachers, against
a baseline trained as long with the same augmentation (docs/results.md, "Function matching").

The protocol of configs/mvkt_crossval.py (PTB-XL ecg_id 1-1500, strat_fold k as test, k % 10 + 1
as validation, fcn_wang, lead I, each fold's own 30-epoch teacher), with every student trained
for ``num_epochs`` on augmented, mixed batches (``augment.*``) and validated every 5 epochs:

  baseline_fm   the student alone, BCE on the mixed labels (the honest control)
  kd_fm         KD on the teacher's outputs for the same augmented, mixed input, plus BCE
  kd_fm_oof     kd_fm taught by out-of-fold teachers (5 per fold, each without a fifth of train)
  kd_fm_ens     kd_fm taught by the mean of the same 5 teachers
  mvkt_fm       MVKT (MKD + CLT with the teacher's embedding of the student's view as positive)
  kd_fm_pure    kd_fm without the label term (pure function matching)
  baseline_fm_xresnet, kd_fm_xresnet
                baseline_fm and kd_fm with a student six times larger (xresnet1d101, 1.9 M
                parameters against fcn_wang's 0.3 M): is the lead-I student short of capacity?

Today's 30-epoch runs without augmentation (teacher, baseline, kd, mvkt) are the records of
docs/results/crossval_1500; the fold's teacher here is retrained with the same config and seed.

  python -m lead_kt.sweep --config=configs/distill_crossval.py --workdir=runs/distill_1500 \\
    --config.data.manual_dir=../shared/data/ptb-xl --config.data.data_dir=runs/tfds_1500
  python -m lead_kt.report --workdirs runs/distill_1500/* docs/results/crossval_1500/records/* \\
    --baseline runs/distill_1500/baseline_fm --out runs/distill_1500/report

``--config.sweep.folds='(1,)'`` screens on one fold. Cost on 2 CPU cores: the 30-epoch teacher
about 2 minutes, each 5-part teacher set about 9, a 100-epoch student 7-15 minutes.
"""

import ml_collections

from configs import default, kd, mvkt


def get_config():
  c = mvkt.get_config()
  for field in ("kd_variant", "kd_temperature", "kd_weight", "fitnet_weight", "at_weight"):
    c[field] = kd.get_config()[field]
  default.function_matching(c)  # the teacher: today's study's, 30 epochs selected every epoch
  c.clt.positive = "current"  # the bank's rows come from other crops and other mixes
  c.sweep = ml_collections.ConfigDict()
  # In order of what the study needs first, so that a sweep stopped early has the main rows.
  c.sweep.methods = (
    "teacher",
    "baseline_fm",
    "kd_fm",
    "kd_fm_oof",
    "kd_fm_ens",
    "mvkt_fm",
    "kd_fm_pure",
    "baseline_fm_xresnet",
    "kd_fm_xresnet",
  )
  c.sweep.variants = {
    "baseline_fm": "baseline",
    "kd_fm": "kd",
    "kd_fm_pure": "kd",
    "kd_fm_oof": "kd",
    "kd_fm_ens": "kd",
    "mvkt_fm": "mvkt",
    "baseline_fm_xresnet": "baseline",
    "kd_fm_xresnet": "kd",
  }
  c.sweep.overrides = {
    "kd_fm_pure": (("label_weight", 0.0),),
    "kd_fm_oof": (("teacher.target", "oof"),),
    "kd_fm_ens": (("teacher.target", "ensemble"),),
    "baseline_fm_xresnet": (("student.backbone", "xresnet1d101"),),
    "kd_fm_xresnet": (("student.backbone", "xresnet1d101"),),
  }
  c.sweep.leads = ()
  c.sweep.folds = tuple(range(1, 11))
  c.sweep.seeds = ()
  return c
