"""Issue 14's evidence: feature reconstruction against its own extractor alone, the convolutional
baseline and MVKT, cross-validated on PTB-XL ecg_id 1-1500 exactly as configs/mvkt_crossval.py
(strat_fold k test, fold k % 10 + 1 validation, fcn_wang teacher per fold, lead I).

Run it into the workdir of configs/mvkt_crossval.py: the sweep skips every finished run, so the
teachers, baselines and MVKT students of that sweep are reused and only the feature-reconstruction
runs train:

  python -m lead_kt.sweep --config=configs/feature_recon_crossval.py --workdir=runs/crossval_1500 \\
    --config.data.manual_dir=../shared/data/ptb-xl --config.data.data_dir=runs/tfds_1500
  python -m lead_kt.report --workdirs runs/crossval_1500/* \\
    --baseline runs/crossval_1500/baseline --out runs/crossval_1500/report

``feature_recon_extractor`` is the CNN-Transformer alone with BCE
(configs/feature_recon_baseline.py); ``feature_recon`` the recommended settings of
configs/feature_recon.py (token targets, LayerNorm, joint). The ablations change one thing each:
``feature_recon_pooled`` (the first version's pooled target), ``feature_recon_no_fusion``
(classify the reconstruction alone) and ``feature_recon_staged`` (5 epochs of reconstruction
alone first). The report pairs every lead-I run with the convolutional baseline; give
``runs/crossval_1500/feature_recon_extractor`` as the only ``--baseline`` to pair with the
extractor. Cost: 50 CNN-Transformer runs on 2 CPU cores, a few minutes each.
"""

from configs import feature_recon, mvkt_crossval


def get_config():
  c = mvkt_crossval.get_config()
  recon = feature_recon.get_config()
  for field in ("recon_weight", "recon", "fusion", "mkd_weight"):
    c[field] = recon[field]
  pooled = feature_recon.get_config("pooled")
  # The extractor and its learning rate, for every run that trains a CNN-Transformer.
  extractor = (
    ("student.backbone", recon.student.backbone),
    ("optimizer.learning_rate", recon.optimizer.learning_rate),
  )
  c.sweep.variants = {
    "feature_recon_extractor": "baseline",
    "feature_recon_pooled": "feature_recon",
    "feature_recon_no_fusion": "feature_recon",
    "feature_recon_staged": "feature_recon",
  }
  c.sweep.methods = (
    "teacher",
    "baseline",
    "mvkt",
    "feature_recon_extractor",
    "feature_recon",
    "feature_recon_pooled",
    "feature_recon_no_fusion",
    "feature_recon_staged",
  )
  c.sweep.overrides = {
    "feature_recon_extractor": extractor,
    "feature_recon": extractor,
    "feature_recon_pooled": (
      *extractor,
      ("recon_weight", pooled.recon_weight),
      ("recon.target", pooled.recon.target),
      ("recon.target_norm", pooled.recon.target_norm),
    ),
    "feature_recon_no_fusion": (*extractor, ("fusion.kind", "none")),
    "feature_recon_staged": (*extractor, ("recon.stage1_epochs", 5)),
  }
  return c
