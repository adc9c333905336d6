"""The feature-reconstruction student's extractor alone: the CNN-Transformer (``cnn_transformer``,
the same registry module the student builds) with its own linear head, trained with BCE only.

Feature reconstruction is judged against it (does reconstructing the teacher add anything to the
extractor?) as well as against the convolutional baseline (configs/baseline.py). The network and
optimiser sections are configs/feature_recon.py's, so a change there reaches both.
"""

import copy

from configs import default, feature_recon


def get_config():
  c = default.get_config()  # not baseline.py's function-matching recipe: feature_recon's own
  recon = feature_recon.get_config()
  c.student = copy.deepcopy(recon.student)
  c.optimizer = copy.deepcopy(recon.optimizer)
  return c
