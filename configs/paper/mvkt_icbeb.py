"""MVKT-ECG on ICBEB2018 (CPSC2018) as the authors' code ran it, with the backbone as a parameter.

  python -m lead_kt.main --config=configs/paper/mvkt_icbeb.py:xresnet1d101_wide \
    --workdir=runs/paper_icbeb --config.data.manual_dir=/path/to/cpsc2018

What differs from ``configs/paper/mvkt_ptbxl.py`` (whose optimiser, schedule, loss weights and CLT
settings this recipe shares: ``transferring.sh`` runs both benchmarks with them), and where it
comes from in the code repository (QINYZz/MVKT-ECG, commit 209abc76):

- the authors' own split, ``datasets/{TRAIN,VAL,TEST}_reference.csv`` (5,501 / 688 / 687 records),
  with their labels (the 18 records that REFERENCE.csv labels 10 are Normal there):
  ``data_builders/icbeb2018/mvkt_split/``;
- 500 Hz, each record denoised with a db6 wavelet and centre-cropped, or tiled when shorter, to
  20 s = 10,000 samples (``datasets/icbeb.py``, ``utils/imagepreprocess_FA_exp3.py``): the
  builder config ``500hz_label10_norm_mvkt_split_db6_20s``. Without the denoising:
  ``--config.data.name=icbeb2018/500hz_label10_norm_mvkt_split_20s``;
- ``other_class`` negatives keyed on REFERENCE.csv's First_label (``datasets/icbeb.py``);
- the default backbone is the code's ``xresnet101`` (``xresnet1d101_wide``) for teacher and student
  (``transferring.sh``).

Cost: 5,501 training records, 172 steps per epoch at batch 32, 17,200 steps for each of the
teacher and the student at 10,000 samples per record (ten times PTB-XL's 1,000): meant for an
accelerator; not measured on one here.
"""

from configs.paper import mvkt_ptbxl


def get_config(backbone: str = "xresnet1d101_wide"):
  c = mvkt_ptbxl.get_config(backbone)
  c.data.name = "icbeb2018/500hz_label10_norm_mvkt_split_db6_20s"
  c.data.crop_len = 0
  c.clt.negatives = "other_class"
  c.clt.class_key = "first_label"
  return c
