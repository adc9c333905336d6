"""Shared defaults of every lead_kt run; method configs import this and set what differs.

Every field can be overridden on the command line, e.g. ``--config.student.backbone=inception1d``.
"""

import ml_collections

ALL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "baseline"  # teacher | baseline | mvkt | kd | feature_recon | signal_recon
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "ptbxl/superdiagnostic_100hz"  # or ptbxl/<task>_<rate>, icbeb2018/<rate>
  c.data.data_dir = "~/tensorflow_datasets"  # TFDS data_dir; gs:// works on Cloud TPU
  c.data.manual_dir = ""  # "" = the builder's default (the bundled PTB-XL sample for ptbxl)
  c.data.student_leads = ("I",)
  c.data.crop_len = 250  # 2.5 s at 100 Hz as the PTB-XL benchmark; 0 = whole record (MVKT code)
  c.data.pad_short = True
  c.data.normalization = "global"  # global | per_lead | none
  # "" or a contract of lead_kt/data/preprocessing.py ("ecgfounder": 500 Hz, ECGFounder's filter
  # and per-record z-score; needs data.normalization = "none").
  c.data.preprocessing = ""
  c.data.eval_stride = 0  # 0 = crop_len // 2
  c.data.eval_aggregate = "max"  # max (benchmark) | mean
  c.data.worker_count = 0
  c.data.cv_test_fold = 0  # 0 = official splits; k = cross-validation fold k as test
  # Train on all but one part of the train split: its records are cut into holdout_parts parts
  # (a fixed permutation, lead_kt/data/train.py) and part holdout_part (1..K) is left out. The
  # out-of-fold teachers (teacher.target) are such runs. 0 = the whole train split.
  c.data.holdout_parts = 0
  c.data.holdout_part = 0

  # The network trained by this run (for teacher runs it reads all 12 leads). The defaults are
  # small so that the quick start (teacher + MVKT student on the bundled sample) takes minutes on
  # two CPU cores; the MVKT paper's networks are xresnet1d101_wide (and xresnet1d101, inception1d,
  # resnet1d_wang, cnn_hannun, resnet1d34): set --config.student.backbone / teacher.backbone.
  c.student = ml_collections.ConfigDict()
  c.student.backbone = "fcn_wang"
  c.student.dtype = "float32"  # or bfloat16 (parameters stay float32)
  c.student.kwargs = ml_collections.ConfigDict()
  # A finished teacher or baseline run (e.g. one lead_kt.convert wrote) whose best variables start
  # this network; a head for another class count starts anew (lead_kt/pretrained.py). "" = none.
  c.student.init_from = ""
  c.student.freeze_backbone = False  # True: train only the head (a linear probe)

  # The frozen 12-lead teacher of transfer methods (mvkt, kd, feature_recon).
  c.teacher = ml_collections.ConfigDict()
  c.teacher.backbone = "fcn_wang"
  # Compute dtype of the teacher run and of the frozen teacher's forward in the transfer step
  # (bfloat16 halves its activations; parameters stay float32).
  c.teacher.dtype = "float32"
  c.teacher.checkpoint = ""  # a teacher run's workdir; "" = train one first into WORKDIR/teacher
  c.teacher.num_epochs = -1  # -1 = num_epochs
  c.teacher.eval_every_epochs = 1  # the teacher run's validation interval (eval_every_epochs)
  # The teacher run trained first (no teacher.checkpoint) starts from this run directory (e.g. a
  # converted foundation model; its contract data.preprocessing comes with it), and with
  # freeze_backbone trains only its head: see student.init_from.
  c.teacher.init_from = ""
  c.teacher.freeze_backbone = False
  # Fields of `optimizer` that the teacher run sets differently (e.g. the MVKT code's teacher
  # warm-up, warmup_lr = 1e-3); empty = the student's optimizer.
  c.teacher.optimizer = ml_collections.ConfigDict()
  c.teacher.kwargs = ml_collections.ConfigDict()
  # What the student is taught with: single (one teacher trained on the whole train split) | oof
  # (out-of-fold: oof_parts teachers, each trained without one part of the train split; every
  # training record is taught by the teacher that did not see it) | ensemble (the mean of the
  # oof_parts teachers' outputs). oof and ensemble evaluate agreement with the ensemble.
  c.teacher.target = "single"
  c.teacher.oof_parts = 5
  # Fields of `augment` that the teacher run trained first sets (it trains without augmentation
  # otherwise, as a teacher trained before this option did).
  c.teacher.augment = ml_collections.ConfigDict()

  c.batch_size = 64  # global, over all devices and processes
  c.eval_batch_size = 128
  c.num_epochs = 30
  c.mesh = ml_collections.ConfigDict()
  c.mesh.model = 1  # model-parallel axis size (1 = pure data parallelism)
  c.mesh.num_devices = 0  # 0 = every device of every process

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = (
    "adamw_onecycle"  # adamw_onecycle (PTB-XL benchmark) | adam_warmup_step (MVKT code)
  )
  c.optimizer.learning_rate = 1e-2
  # adamw_onecycle: AdamW's decoupled decay; adam_warmup_step: L2 in the gradient (torch's Adam).
  c.optimizer.weight_decay = 1e-2
  c.optimizer.pct_start = 0.3  # one-cycle warm-up fraction
  # adam_warmup_step (the MVKT code's schedule, per epoch): warmup_lr * (epoch + 1) for
  # warmup_epochs epochs (warmup_lr <= 0: learning_rate / warmup_epochs), then learning_rate times
  # decay_rate at each of the milestones (epochs).
  c.optimizer.warmup_epochs = 5
  c.optimizer.warmup_lr = 0.0
  c.optimizer.milestones = (30,)
  c.optimizer.decay_rate = 0.1
  c.optimizer.clip_grad_norm = 0.0  # 0 = no clipping

  # On-device augmentation of every method's training batches (lead_kt/augment.py), applied to
  # the 12-lead view before the student's leads are cut from it (recorded noise: see
  # recorded_noise_view). Strengths in normalised units; 0 = off. All off by default.
  c.augment = ml_collections.ConfigDict()
  c.augment.scale = 0.0  # std of the log amplitude factor per record (0.1: about +-10 %)
  c.augment.noise = 0.0  # the largest white-noise std per record (each record's is uniform below)
  c.augment.wander = 0.0  # the largest amplitude of a baseline-wander sinusoid per record
  c.augment.wander_max_hz = 0.5  # its frequency is uniform in [0.05, wander_max_hz] Hz
  c.augment.shift = 0.0  # the largest time shift, as a fraction of the crop (zero-filled)
  c.augment.mixup = 0.0  # Beta(mixup, mixup) weight of whole-crop mixup; 0 = off
  c.augment.cutmix = 0.0  # Beta(cutmix, cutmix) share kept by a time-segment mix; 0 = off
  c.augment.mix_prob = 1.0  # probability that a batch is mixed (by mixup or cutmix, one of them)
  # The largest std of recorded noise per record (each record's is uniform below): the MIT-BIH
  # Noise Stress Test Database's baseline wander, muscle artefact or electrode motion, one drawn
  # per record, each scaled to unit std over its 30 minutes (lead_kt/noise_bank.py).
  c.augment.recorded_noise = 0.0
  # Where it is added, after mixing: student (the student's view only, the wearable's noise that
  # the clinical teacher never sees; a teacher run then sees none) | both (the 12 leads before
  # the student's are cut, so the student sees exactly its leads of the teacher's view).
  c.augment.recorded_noise_view = "student"
  # Weight of the label (BCE) term in kd and mvkt; 0 = pure function matching (the student only
  # matches the teacher, on mixed inputs too).
  c.label_weight = 1.0
  # Validation (and the checkpoint it selects) every this many epochs, and after the last.
  c.eval_every_epochs = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep_latest = 2
  c.checkpoint.async_save = True

  c.log_every_steps = 20
  return c


def function_matching(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``c`` with the recipe that the 10-fold validation of docs/results.md ("Function matching")
  selected for the baseline and KD: 100 epochs, validated every 5, every batch augmented and mixed
  (mixup or a time-segment CutMix); the teacher keeps its 30 unaugmented epochs."""
  c.num_epochs = 100
  c.eval_every_epochs = 5
  c.teacher.num_epochs = 30
  c.augment.update(
    {"scale": 0.1, "noise": 0.05, "wander": 0.1, "shift": 0.1, "mixup": 1.0, "cutmix": 1.0}
  )
  return c
