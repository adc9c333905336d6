"""Backbones cnn_hannun, resnet1d34, reslstm_tse, cnn_transformer: shapes, counts, modes, fitting.

Full-size networks are only traced (``jax.eval_shape``); the tests that run computations use small
configurations of the same classes so that the suite stays fast on CPU.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lead_kt.models as models
from lead_kt.models.cnn_transformer import TransformerEncoder, sinusoidal_positions

NUM_CLASSES = 5

# name -> (trainable parameters for 12 leads / 5 classes, feature width, last map's time
# downsampling, last map's channels)
FULL_SIZE = {
  "cnn_hannun": (10_472_037, 256, 256, 256),
  "resnet1d34": (7_225_733, 512, 32, 512),
  "reslstm_tse": (298_726, 256, 8, 128),
  "cnn_transformer": (683_781, 128, 8, 128),
}

SMALL = {
  # Two blocks: the plain first block, then a strided, widening, pre-activated one.
  "cnn_hannun": dict(base_features=8, num_blocks=2, blocks_per_width=1, kernel_size=5),
  "resnet1d34": dict(stage_sizes=(1, 1), stage_features=(8, 16)),
  "reslstm_tse": dict(conv_features=(8,), hidden_size=16),
  "cnn_transformer": dict(
    branch_kernels=(3, 7), branch_features=8, d_model=16, num_layers=1, num_heads=2, mlp_dim=32
  ),
}


def _key(seed: int) -> jax.Array:
  # XLA:CPU compiles each threefry sampler for about a second; rbg keys compile in a fraction.
  return jax.random.key(seed, impl="rbg")


def _init_shapes(model, batch, time, leads):
  x = jax.ShapeDtypeStruct((batch, time, leads), jnp.float32)
  return jax.eval_shape(lambda x: model.init(_key(0), x), x), x


def _count(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def _signal(batch=4, time=250, leads=12, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, time, leads)), jnp.float32)


def test_all_registered():
  assert set(FULL_SIZE) <= set(models.names())


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_parameter_count(name):
  variables, _ = _init_shapes(models.get(name, NUM_CLASSES), 2, 1000, 12)
  assert _count(variables["params"]) == FULL_SIZE[name][0]


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
@pytest.mark.parametrize("leads", [1, 3, 12])
@pytest.mark.parametrize("time", [250, 1000])
def test_output_shapes(name, leads, time):
  _, features, downsampling, channels = FULL_SIZE[name]
  model = models.get(name, NUM_CLASSES)
  variables, x = _init_shapes(model, 2, time, leads)
  out = jax.eval_shape(model.apply, variables, x)
  assert out.logits.shape == (2, NUM_CLASSES) and out.logits.dtype == jnp.float32
  assert out.features.shape == (2, features)
  assert out.feature_maps[-1].shape == (2, math.ceil(time / downsampling), channels)
  assert all(m.ndim == 3 and m.shape[0] == 2 for m in out.feature_maps)


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_bfloat16_keeps_float32_state_and_logits(name):
  model = models.get(name, NUM_CLASSES, dtype=jnp.bfloat16)
  variables, x = _init_shapes(model, 2, 250, 12)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  out = jax.eval_shape(model.apply, variables, x)
  assert out.logits.dtype == jnp.float32
  assert out.feature_maps[-1].dtype == jnp.bfloat16


@pytest.mark.parametrize("name", sorted(SMALL))
def test_jit_and_train_eval_modes(name):
  model = models.get(name, NUM_CLASSES, **SMALL[name])

  @jax.jit
  def run(x):
    """Initial statistics and (output, new state) in eval and train mode, two dropout keys each."""
    variables = model.init(_key(0), x)
    apply = lambda train, seed: model.apply(
      variables, x, train=train, rngs={"dropout": _key(seed)}, mutable=["batch_stats"]
    )
    return (
      variables["batch_stats"],
      apply(False, 1),
      apply(False, 2),
      apply(True, 1),
      apply(True, 2),
    )

  x = _signal()
  results = run(x)
  jax.tree.map(np.testing.assert_array_equal, results, run(x))  # jitted, deterministic
  stats, (eval_a, eval_state), (eval_b, _), (train_a, train_state), (train_b, _) = results
  np.testing.assert_array_equal(eval_a.logits, eval_b.logits)
  jax.tree.map(np.testing.assert_array_equal, eval_state["batch_stats"], stats)
  assert not np.allclose(train_a.logits, eval_a.logits)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), train_state["batch_stats"], stats)
  assert all(jax.tree.leaves(changed))
  has_dropout = getattr(model, "dropout", 0.0) > 0
  assert np.allclose(train_a.logits, train_b.logits) != has_dropout


def test_overfits_tiny_batch():
  model = models.get("cnn_hannun", NUM_CLASSES, dropout=0.0, **SMALL["cnn_hannun"])
  x = _signal(batch=8, seed=3)
  labels = jnp.asarray(np.random.default_rng(4).random((8, NUM_CLASSES)) < 0.4, jnp.float32)
  optimizer = optax.adam(1e-2)

  def loss_fn(params, stats):
    out, state = model.apply(
      {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )
    return optax.sigmoid_binary_cross_entropy(out.logits, labels).mean(), state["batch_stats"]

  @jax.jit
  def fit():
    """BCE losses of 40 Adam steps, in one compiled loop."""
    variables = model.init(_key(0), x)

    def step(carry, _):
      params, stats, opt_state = carry
      (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), stats, opt_state), loss

    params = variables["params"]
    carry = (params, variables["batch_stats"], optimizer.init(params))
    return jax.lax.scan(step, carry, length=40)[1]

  losses = fit()
  assert losses[-1] < 0.5 * losses[0], losses


def test_transformer_encoder_is_reusable():
  encoder = TransformerEncoder(num_layers=2, d_model=16, num_heads=2, mlp_dim=32, dropout=0.1)
  tokens = jax.ShapeDtypeStruct((2, 7, 16), jnp.float32)
  variables = jax.eval_shape(encoder.init, _key(0), tokens)
  assert jax.eval_shape(encoder.apply, variables, tokens).shape == tokens.shape
  narrow = jax.ShapeDtypeStruct((2, 7, 8), jnp.float32)
  with pytest.raises(ValueError, match=r"\[batch, tokens, 16\]"):
    jax.eval_shape(encoder.apply, variables, narrow)


def test_positions():
  codes = sinusoidal_positions(5, 4)
  np.testing.assert_allclose(codes[:, 0], np.sin(np.arange(5)), atol=1e-6)
  np.testing.assert_allclose(codes[:, 1], np.cos(np.arange(5)), atol=1e-6)
  model = models.get(
    "cnn_transformer",
    NUM_CLASSES,
    learned_positions=True,
    max_tokens=32,
    **SMALL["cnn_transformer"],
  )
  variables, _ = _init_shapes(model, 2, 256, 12)
  assert variables["params"]["position_embedding"].shape == (32, 16)
  with pytest.raises(ValueError, match="learned positions"):
    _init_shapes(model, 2, 264, 12)


def test_bad_configurations_raise():
  with pytest.raises(ValueError, match="even hidden_size"):
    _init_shapes(models.get("reslstm_tse", NUM_CLASSES, hidden_size=15), 2, 250, 12)
  with pytest.raises(ValueError, match="must be odd"):
    _init_shapes(models.get("cnn_transformer", NUM_CLASSES, branch_kernels=(3, 8)), 2, 250, 12)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_fused_lstm_equals_flax_rnn_layers(bidirectional):
  """reslstm_tse's LSTM (one scan for both directions, hand-written gradient) keeps flax's
  ``nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell))`` variables, initial values, outputs and
  gradients."""
  import flax.linen as nn

  from lead_kt.models import reslstm

  directions, width = (2 if bidirectional else 1), 16

  class FlaxLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(2):
        rnn = lambda: nn.RNN(nn.OptimizedLSTMCell(width // directions))
        x = x + (nn.Bidirectional(rnn(), rnn()) if bidirectional else rnn())(x)
      return x

  class FusedLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
      for layer in range(2):
        names = range(directions * layer, directions * (layer + 1))
        cells = [
          reslstm.LSTMCellParams(width // directions, name=f"OptimizedLSTMCell_{cell}")(width)
          for cell in names
        ]
        x = x + reslstm.fused_lstm(x, cells, jnp.float32)
      return x

  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 11, width)), jnp.float32)
  variables = FlaxLayers().init(jax.random.PRNGKey(0), x)
  fused_variables = FusedLayers().init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(fused_variables) == jax.tree.structure(variables)
  for got, want in zip(jax.tree.leaves(fused_variables), jax.tree.leaves(variables), strict=True):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(
    FusedLayers().apply(variables, x), FlaxLayers().apply(variables, x), atol=1e-5
  )
  gradients = lambda module: jax.grad(
    lambda v, x: jnp.sum(jnp.sin(module.apply(v, x))), argnums=(0, 1)
  )(variables, x)
  for got, want in zip(
    jax.tree.leaves(gradients(FusedLayers())), jax.tree.leaves(gradients(FlaxLayers())), strict=True
  ):
    np.testing.assert_allclose(got, want, atol=2e-5)
