"""Signal reconstruction (WearECG-style): a VAE rebuilds the 12 leads from a few kept leads.

The input is the kept leads in their places with the others zeroed, the target all 12 leads
(lead_kt/methods/signal_recon.py). With ``teacher.checkpoint`` empty the run first trains the
12-lead teacher into WORKDIR/teacher (it scores the reconstructions), then the VAE into
WORKDIR/student.
Kept leads: ``--config.kept_leads=I`` or ``--config.kept_leads="('II','V1','V5')"``.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.method = "signal_recon"
  # The kept leads are the run's "student" leads: one field, two names (data.student_leads is what
  # the pipeline and results.json read).
  c.data.student_leads = ("II", "V1", "V5")
  c.kept_leads = c.data.get_ref("student_leads")
  c.data.crop_len = 0  # whole 10 s records as WearECG; crops are padded to a multiple of 8
  c.student.backbone = "signal_vae"  # a label only: the trained network is the VAE below

  c.vae = ml_collections.ConfigDict()
  c.vae.channels = (128, 256, 512)  # one stride-2 downsampling per level: latent length T / 8
  c.vae.num_res_blocks = 2  # residual blocks per level (encoder and decoder)
  c.vae.latent_channels = 4
  c.vae.num_groups = 32  # GroupNorm groups; must divide every width

  c.kl_weight = 1e-4
  c.pass_through_kept = True  # the output's kept leads are the real ones

  c.optimizer.learning_rate = 1e-3
  return c
