"""The PyTorch twins of the benchmarked backbones: the Flax models' trainable parameter counts; the
twins of our own design (lead_kt.interop.own_twins) compute the Flax model's eval-mode function
with its weights copied in; the bench gives every benchmarked backbone a PyTorch side and times
JAX and PyTorch in turns."""

import jax
import numpy as np
import pytest

from configs import bench as bench_config
from lead_kt import models
from lead_kt.bench import __main__ as bench_cli
from lead_kt.bench import core

torch = pytest.importorskip("torch")
own_twins = pytest.importorskip("lead_kt.interop.own_twins")
torch_ref = pytest.importorskip("lead_kt.bench.torch_ref")

NUM_CLASSES = 5


@pytest.mark.parametrize("leads", [1, 12])
@pytest.mark.parametrize("backbone", list(own_twins.BUILDERS))
def test_own_twins_have_the_flax_parameter_count(backbone, leads):
  twin = own_twins.build(backbone, leads, NUM_CLASSES)
  flax_count = core.backbone_param_count(backbone, leads, NUM_CLASSES, 250)
  assert torch_ref.trainable_count(twin) == flax_count


def test_every_benchmarked_step_has_a_twin_of_the_flax_parameter_count():
  cases = [core.Case.parse(spec) for spec in bench_config.get_config().cases]
  twinned = {
    (case.backbone, 12 if case.method == "teacher" else case.leads)
    for case in cases
    if case.method in torch_ref.METHODS and case.dtype == "float32" and not case.teacher
  }
  assert {backbone for backbone, _ in twinned} >= set(own_twins.BUILDERS)
  for backbone, leads in sorted(twinned):
    twin = torch_ref.build(backbone, leads, NUM_CLASSES)
    flax_count = core.backbone_param_count(backbone, leads, NUM_CLASSES, 250)
    assert torch_ref.trainable_count(twin) == flax_count, (backbone, leads)


def perturbed(variables, seed: int = 0):
  """``variables`` moved off their initial values (zero BN gates, unit statistics), so that a
  weight copied to the wrong place changes the function."""
  rng = np.random.default_rng(seed)
  noise = lambda leaf: np.asarray(leaf) + 0.05 * rng.standard_normal(leaf.shape, np.float32)
  params = jax.tree.map(noise, variables["params"])
  stats = jax.tree.map(lambda leaf: np.abs(noise(leaf)) + 0.5, variables["batch_stats"])
  return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("backbone", list(own_twins.BUILDERS))
def test_own_twins_compute_the_flax_function_in_eval_mode(backbone):
  module = models.get(backbone, NUM_CLASSES)
  x = np.random.default_rng(1).standard_normal((2, 64, 12)).astype(np.float32)
  variables = perturbed(jax.jit(module.init)(jax.random.key(0, impl="rbg"), x))
  expected = jax.jit(module.apply)(variables, x)
  twin = own_twins.build(backbone, 12, NUM_CLASSES)
  own_twins.load_flax(twin, variables)
  with torch.no_grad():
    logits, features = twin.eval().logits_and_features(torch.from_numpy(x.transpose(0, 2, 1)))
  for ours, theirs in ((logits, expected.logits), (features, expected.features)):
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def test_load_flax_names_a_shape_that_differs():
  variables = jax.eval_shape(
    models.get("reslstm_tse", NUM_CLASSES).init, jax.random.key(0), np.zeros((1, 64, 12))
  )
  variables = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), variables)
  with pytest.raises(ValueError, match="ConvBN_0/Conv_0/kernel"):
    own_twins.load_flax(own_twins.build("reslstm_tse", 1, NUM_CLASSES), variables)


def test_torch_mvkt_step_sizes_its_embedding_heads_from_the_features():
  """reslstm_tse's features are 256 wide (the xresnets' 512)."""
  case = core.Case.parse("mvkt:reslstm_tse:4:64:1:float32")
  batch = core.synthetic_batch(case, num_classes=NUM_CLASSES, num_train=32)
  step = torch_ref.make_step(
    "mvkt", "reslstm_tse", batch, NUM_CLASSES, num_train=32, negatives=8, embed_hidden=0
  )
  first, seconds = torch_ref.measure(step, warmup=1, timed=1)
  assert first > 0 and len(seconds) == 1
  assert step.num_params == core.backbone_param_count("reslstm_tse", 1, NUM_CLASSES, 64)


@pytest.mark.parametrize(
  "timed, rounds, expected", [(10, 5, [2] * 5), (7, 3, [3, 2, 2]), (2, 5, [1, 1]), (0, 5, [0])]
)
def test_blocks_split_the_timed_steps(timed, rounds, expected):
  assert core.blocks(timed, rounds) == expected


def test_bench_times_jax_and_torch_in_turns(tmp_path, monkeypatch):
  cfg = bench_config.get_config()
  cfg.cases = ("baseline:fcn_wang:4:64:1:float32",)
  cfg.warmup_steps, cfg.timed_steps = 1, 4
  cfg.torch.compile, cfg.torch.rounds = False, 2
  cfg.pipeline.enabled = False
  cfg.scaling.device_counts = cfg.scaling.process_counts = ()
  turns = []
  jax_steps, torch_steps = core.time_steps, torch_ref.TorchStep.time

  def jax_turn(built, warmup, timed):
    turns.append(("jax", timed))
    return jax_steps(built, warmup, timed)

  def torch_turn(step, steps):
    turns.append(("torch", steps))
    return torch_steps(step, steps)

  monkeypatch.setattr(core, "time_steps", jax_turn)
  monkeypatch.setattr(torch_ref.TorchStep, "time", torch_turn)
  (record,) = bench_cli.run(cfg, tmp_path / "bench.jsonl")
  timed_turns = [turn for turn in turns[turns.index(("jax", 0)) :] if turn[1]]
  assert timed_turns == [("jax", 2), ("torch", 2)] * 2
  eager = record["torch"]["eager"]
  assert record["step_ms"]["n"] == eager["step_ms"]["n"] == 4
  assert eager["jax_ratio"] == pytest.approx(record["samples_per_s"] / eager["samples_per_s"])
  assert record["torch"]["num_params"] == record["num_params"]
