"""Methods as plug-ins of the one trainer; ``create`` picks one by ``config.method``.

Each method module ``lead_kt/methods/<name>.py`` provides ``validate(config)`` (reject unknown
options before anything is built) and ``create(config, num_classes, num_train, train_first_labels)``
returning an object with ``init``, ``loss`` and ``predict`` (see ``base.py``). A new method is a new
module, an entry below and a config file; the trainer does not change.
"""

import importlib

import ml_collections

# method name -> module in lead_kt.methods
_MODULES = {
  "teacher": "supervised",
  "baseline": "supervised",
  "mvkt": "mvkt",
  "kd": "kd",
  "feature_recon": "feature_recon",
  "signal_recon": "signal_recon",
}
METHODS = tuple(_MODULES)
# Methods that need a frozen 12-lead teacher (trained first into WORKDIR/teacher if none is given).
TRANSFER_METHODS = ("mvkt", "kd", "feature_recon", "signal_recon")
# Transfer methods that take out-of-fold or ensemble teacher targets (teacher.target).
MULTI_TEACHER_METHODS = ("mvkt", "kd")
TEACHER_TARGETS = ("single", "oof", "ensemble")


def _module(method: str):
  if method not in _MODULES:
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
  return importlib.import_module(f"lead_kt.methods.{_MODULES[method]}")


def check_choice(field: str, value, known) -> None:
  if value not in known:
    raise ValueError(f"unknown {field} {value!r}; known: {', '.join(map(str, known))}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects unknown method names and options before anything is built."""
  _module(config.method).validate(config)
  if config.method in TRANSFER_METHODS:
    target = config.teacher.get("target", "single")
    check_choice("teacher.target", target, TEACHER_TARGETS)
    if target != "single" and config.method not in MULTI_TEACHER_METHODS:
      raise ValueError(
        f"teacher.target {target!r} serves {', '.join(MULTI_TEACHER_METHODS)}, not {config.method}"
      )
    if target != "single" and config.teacher.oof_parts < 2:
      raise ValueError(f"teacher.oof_parts must be >= 2, got {config.teacher.oof_parts}")


def create(config: ml_collections.ConfigDict, num_classes: int, num_train: int, train_first_labels):
  return _module(config.method).create(config, num_classes, num_train, train_first_labels)
