"""Tiny, fast configs of the real trainer on the bundled PTB-XL sample (shared by trainer tests)."""

from configs import baseline, default, kd, mvkt, teacher
from lead_kt import config_fields, methods

CONFIGS = {"teacher": teacher, "baseline": baseline, "mvkt": mvkt, "kd": kd}


def tiny_config(method: str, data_dir: str, **overrides):
  """``method``'s config shrunk to seconds: a narrow fcn_wang, 2 epochs, batch 32, 2.5 s crops,
  no augmentation."""
  c = CONFIGS[method].get_config()
  c.data.data_dir = data_dir
  for net in (c.student, c.teacher):
    net.backbone = "fcn_wang"
    net.kwargs.filters = (16, 32, 16)
  c.batch_size = 32
  c.eval_batch_size = 512
  c.num_epochs = 2
  # Seconds, whatever the method's recipe (default.function_matching): validated every epoch, the
  # teacher as long as the student, unaugmented unless a test says otherwise.
  c.eval_every_epochs, c.teacher.num_epochs = 1, -1
  c.augment = default.get_config().augment
  c.log_every_steps = 4
  c.checkpoint.async_save = False
  if method == "mvkt":
    c.clt.num_negatives = 64
    c.clt.embed_dim = 16
  config_fields.set_fields(c, overrides.items())
  return c


def build_method(config, num_classes: int, num_train: int = 32):
  """The method ``config`` names, validated and created as the trainer does (no teacher labels)."""
  methods.validate(config)
  return methods.create(config, num_classes, num_train, train_first_labels=None)
