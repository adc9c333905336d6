"""The benchmark backbones: shapes, parameter counts, jit, train/eval semantics, BN, overfit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lead_kt import models
from lead_kt.models import layers
from lead_kt.models.layers import BatchNorm, materialize
from lead_kt.models.xresnet import BottleneckBlock

# Trainable parameters for 5 classes and 12 leads, from the reference PyTorch implementations.
PARAMETER_COUNTS = {
  "xresnet1d101": 1_872_261,
  "xresnet1d50": 953_989,
  "xresnet1d101_wide": 28_301_509,
  "inception1d": 507_653,
  "resnet1d_wang": 473_349,
  "fcn_wang": 309_765,
}
# name -> (feature size, number of feature maps, channels of the deepest map)
FEATURES = {
  "xresnet1d101": (512, 4, 256),
  "xresnet1d50": (512, 4, 256),
  "xresnet1d101_wide": (4096, 4, 2048),
  "inception1d": (256, 2, 128),
  "resnet1d_wang": (256, 3, 128),
  "fcn_wang": (256, 3, 128),
}
# Shallow versions of the deep nets (same classes and code paths) keep compiled tests fast.
NARROW_XRESNET = {"blocks": (1, 1, 1, 1), "widths": (4, 4, 8, 8), "stem_widths": (8, 8, 16)}
SMALL_KWARGS = {
  "xresnet1d101": NARROW_XRESNET,
  "xresnet1d50": NARROW_XRESNET,
  "xresnet1d101_wide": NARROW_XRESNET,
  "inception1d": {"depth": 3, "filters": 8, "bottleneck": 8},
  "resnet1d_wang": {"width": 16},
  "fcn_wang": {"filters": (16, 32, 16)},
}
BENCHMARK_NAMES = list(PARAMETER_COUNTS)


def key(seed: int) -> jax.Array:
  # XLA:CPU compiles the "rbg" generator much faster than threefry (init dominates test time).
  return jax.random.key(seed, impl="rbg")


def small(name: str) -> nn.Module:
  return models.get(name, 5, **SMALL_KWARGS.get(name, {}))


def batch(leads: int = 12, length: int = 250, size: int = 4, seed: int = 0) -> jax.Array:
  return jax.random.normal(key(seed), (size, length, leads))


def test_all_benchmark_backbones_are_registered():
  assert set(BENCHMARK_NAMES) <= set(models.names())


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_trainable_parameter_counts_match_reference(name):
  module = models.get(name, 5)
  variables = jax.eval_shape(module.init, key(0), jnp.zeros((2, 1000, 12)))
  count = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  assert count == PARAMETER_COUNTS[name]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_output_shapes_for_leads_and_lengths(name):
  module = models.get(name, 5)
  feature_size, num_maps, deepest_channels = FEATURES[name]
  init = lambda x: module.init_with_output(key(0), x)
  for leads in (1, 3, 12):
    out_short, variables = jax.eval_shape(init, jnp.zeros((3, 250, leads)))
    out_long = jax.eval_shape(module.apply, variables, jnp.zeros((3, 1000, leads)))
    for length, out in ((250, out_short), (1000, out_long)):
      assert out.logits.shape == (3, 5) and out.logits.dtype == jnp.float32
      assert out.features.shape == (3, feature_size)
      assert len(out.feature_maps) == num_maps
      assert all(m.ndim == 3 and m.shape[0] == 3 for m in out.feature_maps)
      assert out.feature_maps[-1].shape[-1] == deepest_channels
      # Maps go from shallow to deep: time never grows.
      lengths = [m.shape[1] for m in out.feature_maps]
      assert lengths == sorted(lengths, reverse=True) and lengths[0] <= length


def test_xresnet_time_resolution_follows_the_pytorch_reference():
  # 250 -> stem stride 2 -> 125 -> max pool -> 63 -> stages 63, 32 (ceil), 16, 8.
  out = jax.eval_shape(
    lambda x: models.get("xresnet1d50", 5).init_with_output(key(0), x)[0],
    jnp.zeros((1, 250, 12)),
  )
  assert [m.shape[1] for m in out.feature_maps] == [63, 32, 16, 8]


def test_fcn_wang_kernel_eight_shortens_by_one_like_pytorch():
  out = jax.eval_shape(
    lambda x: models.get("fcn_wang", 5).init_with_output(key(0), x)[0],
    jnp.zeros((1, 250, 12)),
  )
  assert [m.shape[1] for m in out.feature_maps] == [249, 249, 249]


@pytest.fixture(scope="module", params=BENCHMARK_NAMES)
def compiled(request):
  """(name, module, variables, jitted apply) for a small version of each backbone."""
  module = small(request.param)
  variables = jax.jit(module.init)(key(0), batch())
  apply = jax.jit(module.apply, static_argnames=("train", "mutable"))
  return request.param, module, variables, apply


def test_jit_is_deterministic_in_eval_mode(compiled):
  _, _, variables, apply = compiled
  first, second = apply(variables, batch()), apply(variables, batch())
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), first, second))
  assert np.isfinite(np.asarray(first.logits)).all()


def test_train_mode_randomness_and_batch_statistics(compiled):
  name, _, variables, apply = compiled
  x = batch()

  def train(seed):
    return apply(variables, x, train=True, rngs={"dropout": key(seed)}, mutable=("batch_stats",))

  (out_a, stats), (out_b, _) = train(1), train(2)
  if name == "xresnet1d101_wide":  # no dropout: train mode is deterministic
    np.testing.assert_array_equal(out_a.logits, out_b.logits)
  else:  # the benchmark head's dropout
    assert not np.allclose(out_a.logits, out_b.logits)
  changed = jax.tree.map(
    lambda old, new: not np.allclose(old, new), variables["batch_stats"], stats["batch_stats"]
  )
  assert all(jax.tree.leaves(changed))

  _, eval_stats = apply(variables, x, mutable=("batch_stats",))
  assert jax.tree.all(
    jax.tree.map(
      lambda a, b: bool(jnp.array_equal(a, b)), variables["batch_stats"], eval_stats["batch_stats"]
    )
  )


@pytest.mark.parametrize("name", ["resnet1d_wang", "xresnet1d101"])
def test_bfloat16_computation_keeps_float32_parameters_and_statistics(name):
  module = models.get(name, 5, dtype=jnp.bfloat16, **SMALL_KWARGS[name])
  x = batch(length=64)
  variables = jax.jit(module.init)(key(0), x)
  apply = jax.jit(module.apply, static_argnames=("train", "mutable"))
  out, stats = apply(variables, x, train=True, rngs={"dropout": key(0)}, mutable=("batch_stats",))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(stats))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))
  assert out.feature_maps[-1].dtype == jnp.bfloat16
  assert out.logits.dtype == jnp.float32 and np.isfinite(np.asarray(out.logits)).all()


def test_batch_norm_matches_flax_batch_norm_but_keeps_pytorchs_unbiased_running_variance():
  x = 3.0 * batch(leads=6, size=5) + 1.5
  count = x.size // x.shape[-1]
  ours = BatchNorm()
  reference = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  variables = ours.init(key(0), x, train=False)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
    jnp.shape, reference.init(key(0), x, use_running_average=True)
  )
  y, stats = ours.apply(variables, x, train=True, mutable=["batch_stats"])
  y_ref, stats_ref = reference.apply(
    variables, x, use_running_average=False, mutable=["batch_stats"]
  )
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  ours_stats, flax_stats = stats["batch_stats"], stats_ref["batch_stats"]
  np.testing.assert_allclose(ours_stats["mean"], flax_stats["mean"], rtol=1e-5)
  # Flax averages the biased batch variance into the running one, PyTorch the unbiased one.
  batch_var = (flax_stats["var"] - 0.9 * variables["batch_stats"]["var"]) / 0.1
  np.testing.assert_allclose(
    ours_stats["var"],
    0.9 * variables["batch_stats"]["var"] + 0.1 * batch_var * count / (count - 1),
    rtol=1e-5,
  )
  updated = {"params": variables["params"], **stats_ref}
  np.testing.assert_allclose(
    ours.apply(updated, x, train=False),
    reference.apply(updated, x, use_running_average=True),
    atol=1e-5,
  )


def test_materialize_is_the_identity_for_values_and_gradients():
  x = batch(leads=3)
  anchor = jnp.array([0.7, -2.0])
  np.testing.assert_array_equal(jax.jit(materialize)(x, anchor), x)
  grad = jax.grad(lambda v: jnp.sum(materialize(v, anchor) ** 2))(x)
  np.testing.assert_allclose(grad, 2 * x)


# A ResNet-34 of two blocks: every residual block ends in ``materialize``.
TWO_BLOCK_RESNET = {"stage_sizes": (1, 1), "stage_features": (8, 16)}


def _eval_forward(module: nn.Module, x: jax.Array):
  variables = jax.eval_shape(module.init, key(0), x)
  return jax.jit(lambda v, x: module.apply(v, x).logits).trace(variables, x)


def test_materialize_divides_on_cpu_only():
  """XLA:CPU's workaround is chosen at lowering: CPU has one division per block more than CUDA,
  whose module has none of them, and the compiled CPU program keeps them without a conditional."""
  traced = _eval_forward(models.get("resnet1d34", 5, **TWO_BLOCK_RESNET), batch(leads=1))
  divisions = {
    platform: traced.lower(lowering_platforms=(platform,)).as_text().count("stablehlo.divide")
    for platform in ("cpu", "cuda", "tpu")
  }
  assert divisions["cpu"] == divisions["cuda"] + 2 == divisions["tpu"] + 2
  compiled = traced.lower().compile().as_text()
  assert " divide(" in compiled and " conditional(" not in compiled


CHANNELS_LAST = ("NWC", "WIO", "NWC")


# (input length, kernel, stride, padding): all short enough for patches (the kernel covers the
# input or the output) but the last, which keeps the convolution.
@pytest.mark.parametrize(
  "length, kernel, stride, padding",
  [
    (8, 16, 1, "SAME"),
    (24, 16, 2, "SAME"),
    (4, 5, 1, [(2, 2)]),
    (7, 8, 1, [(3, 3)]),
    (40, 5, 2, "SAME"),
  ],
)
def test_short_convolution_as_patches_equals_the_convolution(length, kernel, stride, padding):
  rng = np.random.default_rng(length)
  x = jnp.asarray(rng.normal(size=(3, length, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, 5, 6)), jnp.float32)
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, CHANNELS_LAST)
  ours = lambda w, x: layers.conv_general_dilated(x, w, (stride,), padding, None, None, numbers)
  plain = lambda w, x: jax.lax.conv_general_dilated(x, w, (stride,), padding, None, None, numbers)
  np.testing.assert_allclose(jax.jit(ours)(w, x), plain(w, x), atol=2e-5)
  gradients = lambda conv: jax.grad(lambda w, x: jnp.sum(jnp.sin(conv(w, x))), (0, 1))(w, x)
  for got, want in zip(gradients(ours), gradients(plain), strict=True):
    np.testing.assert_allclose(got, want, atol=5e-5)
  lowered = jax.jit(ours).lower(w, x).as_text()
  assert ("stablehlo.convolution" in lowered) == (length == 40)


def test_short_convolution_is_patches_on_cpu_only():
  """cnn_hannun's last layers (kernel 16 over 8 steps): a dot on CPU, a convolution elsewhere."""
  x = jax.ShapeDtypeStruct((2, 8, 4), jnp.float32)
  w = jax.ShapeDtypeStruct((16, 4, 4), jnp.float32)
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, CHANNELS_LAST)

  # A new function each time: JAX reuses the trace of a function it has traced before.
  def lower(**kwargs) -> str:
    conv = lambda w, x: layers.conv_general_dilated(x, w, (1,), "SAME", None, None, numbers)
    return jax.jit(conv).trace(w, x).lower(**kwargs).as_text()

  text = {platform: lower(lowering_platforms=(platform,)) for platform in ("cpu", "cuda", "tpu")}
  assert "stablehlo.convolution" not in text["cpu"] and "stablehlo.dot_general" in text["cpu"]
  for platform in ("cuda", "tpu"):
    assert "stablehlo.convolution" in text[platform]
    assert "stablehlo.dot_general" not in text[platform]
  with layers.without_cpu_workarounds():
    assert "stablehlo.convolution" in lower()


def test_without_cpu_workarounds_traces_no_platform_switch():
  module = models.get("resnet1d34", 5, **TWO_BLOCK_RESNET)
  x = batch(leads=1)
  variables = jax.eval_shape(module.init, key(0), x)
  # A new function each time: JAX reuses the trace of a function it has traced before.
  jaxpr = lambda: str(jax.make_jaxpr(lambda v, x: module.apply(v, x).logits)(variables, x))
  assert "platform_index" in jaxpr()
  with layers.without_cpu_workarounds():
    assert "platform_index" not in jaxpr()
  assert "platform_index" in jaxpr()  # Restored.


def test_onnx_conversion_of_a_residual_backbone_equals_flax():
  """jax2onnx knows no ``platform_index``: the export traces without the CPU workaround."""
  onnxruntime = pytest.importorskip("onnxruntime")
  pytest.importorskip("jax2onnx")
  from lead_kt import export

  module = models.get("resnet1d34", 5, **TWO_BLOCK_RESNET)
  x = np.asarray(batch(leads=1, length=64, size=2))
  variables = module.init(key(0), x)
  forward = lambda windows: module.apply(variables, windows).logits
  model = export.to_onnx(forward, ("B", 64, 1))
  (out,) = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"windows": x})
  np.testing.assert_allclose(out, np.asarray(forward(x)), atol=1e-5)


def test_strided_bottleneck_identity_path_averages_partial_windows_like_ceil_mode():
  # At init the last BN's zero gate silences the conv path, so the block is ReLU(AvgPool(x)).
  block = BottleneckBlock(hidden=2, expansion=4, kernel_size=5, strides=2)
  x = jnp.abs(batch(leads=8, length=5, size=1))
  y = jax.jit(block.init_with_output, static_argnames="train")(key(0), x, train=False)[0]
  expected = jnp.stack([x[:, 0:2].mean(1), x[:, 2:4].mean(1), x[:, 4]], axis=1)
  np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_fcn_wang_overfits_a_tiny_batch():
  module = models.get("fcn_wang", 3, filters=(16, 32, 16))
  x = batch(leads=12, length=128, size=8)
  labels = (jax.random.uniform(key(1), (8, 3)) > 0.5).astype(jnp.float32)
  variables = module.init(key(0), x)
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, stats, opt_state, rng):
    def loss_fn(p):
      out, new_stats = module.apply(
        {"params": p, **stats}, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
      )
      return optax.sigmoid_binary_cross_entropy(out.logits, labels).mean(), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
  opt_state = optimizer.init(params)
  losses = []
  for i in range(30):
    params, stats, opt_state, loss = step(params, stats, opt_state, key(i))
    losses.append(float(loss))
  assert min(losses[-5:]) < 0.5 * losses[0]
