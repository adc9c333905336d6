"""MVKT's paper-vs-code options: embedding heads, CLT positive and loss form, other_class keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import build_method, tiny_config

from lead_kt import methods


def _batch(batch=4, length=64, num_classes=5):
  rng = np.random.default_rng(0)
  return {
    "teacher": jnp.asarray(rng.standard_normal((batch, length, 12)), jnp.float32),
    "student": jnp.asarray(rng.standard_normal((batch, length, 1)), jnp.float32),
    "label": jnp.asarray(rng.random((batch, num_classes)) < 0.3, jnp.float32),
    "index": jnp.arange(batch, dtype=jnp.int32),
    "mask": jnp.ones((batch,), jnp.float32),
  }


@pytest.mark.parametrize(
  "override, message",
  [
    ({"clt.positive": "label"}, "unknown clt.positive"),
    ({"clt.loss": "triplet"}, "unknown clt.loss"),
    ({"clt.class_key": "last_label"}, "unknown clt.class_key"),
    ({"clt.head_hidden": -1}, "clt.head_hidden must be >= 0"),
  ],
)
def test_unknown_mvkt_options_are_refused(override, message):
  with pytest.raises(ValueError, match=message):
    methods.validate(tiny_config("mvkt", "unused", **override))


@pytest.mark.parametrize("hidden", [0, 24])
def test_embedding_heads_are_the_codes_linear_or_the_papers_mlp(hidden):
  method = build_method(tiny_config("mvkt", "unused", **{"clt.head_hidden": hidden}), 5)
  params, _ = method.init(jax.random.key(0), _batch())
  for side in ("embed_student", "embed_teacher"):
    assert ("hidden" in params[side]) == (hidden > 0)
    if hidden:
      assert params[side]["hidden"]["kernel"].shape[1] == hidden


@pytest.mark.parametrize(
  "positive, loss",
  [("bank", "nce"), ("current", "nce"), ("bank", "infonce"), ("current", "infonce")],
)
def test_every_clt_variant_gives_a_finite_loss_and_gradient(positive, loss):
  config = tiny_config("mvkt", "unused", **{"clt.positive": positive, "clt.loss": loss})
  method = build_method(config, 5)
  batch = _batch()
  params, state = method.init(jax.random.key(0), batch)
  (total, (_, terms)), grads = jax.value_and_grad(method.loss, has_aux=True)(
    params, state, batch, jax.random.key(1)
  )
  assert np.isfinite(float(total)) and float(terms["clt"]) > 0
  assert 0.0 <= float(terms["clt_accuracy"]) <= 1.0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["embed_teacher"]["output"]["kernel"]).max()) > 0


def test_bit0_class_key_splits_records_as_the_mvkt_code_does_on_ptbxl():
  config = tiny_config("mvkt", "unused", **{"clt.negatives": "other_class"})
  first_labels = np.array([0, 2, -1, 0, 4], np.int32)
  by_first_label = methods.create(config, 5, 5, first_labels)
  assert by_first_label.train_first_labels == (0, 2, -1, 0, 4)
  config.clt.class_key = "bit0"
  # The code keys on bit 0 of the multi-hot label: set (lowest class 0) or not, nothing else.
  assert methods.create(config, 5, 5, first_labels).train_first_labels == (0, 1, 1, 0, 1)
