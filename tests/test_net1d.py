"""ECGFounder's Net1D (lead_kt.models.net1d): the parameter count of the reference network, the
twin's function after conversion (random and briefly trained weights, real records), a new head
for another number of classes, the BN/dropout options and the errors of the loader."""

import functools
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lead_kt import ecg_io, interop, models
from lead_kt.interop import layouts
from lead_kt.models import net1d, registry

torch = pytest.importorskip("torch")
torch_twins = pytest.importorskip("lead_kt.interop.torch_twins")

RELEASED_CLASSES = 150  # the released checkpoints' head
TARGET_CLASSES = 5
BATCH = 2
TRAIN_STEPS = 3
SAMPLE = Path(__file__).parents[1] / "data_builders" / "ptbxl" / "sample" / "records100"
# The full network on 2 cores: short records keep the suite fast. 1000 samples (the bundled
# sample's 10 s at 100 Hz) reach the fourth and fifth stages at odd lengths (125, 63), where the
# zero-padded max-pool of the identity reads a padded zero.
LENGTH = 1000
TRAIN_LENGTH = 256  # of the twin's training crops
# The weights and biases of the BatchNorm1d modules that the reference builds without BN (the
# stem's, and one before each of a block's three convolutions: 33,184 channels) and never calls.
UNUSED_BN_PARAMETERS = 66_368


@functools.cache
def records(leads: int) -> np.ndarray:
  """``[BATCH, 1000, leads]`` float32 mV from the bundled PTB-XL sample (lead I for one lead)."""
  signals = []
  for path in ecg_io.find_records(SAMPLE)[:BATCH]:
    record = ecg_io.read_record(path)
    signals.append(ecg_io.select_leads(record, ("I",) if leads == 1 else record.lead_names))
  return np.stack(signals).astype(np.float32)


def channels_first(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))


@functools.cache
def twin(leads: int, trained: bool):
  """The released configuration's twin (150 classes), in eval mode; ``trained``: after
  ``TRAIN_STEPS`` AdamW steps of BCE on the records."""
  torch.manual_seed(leads)
  network = torch_twins.Net1D(leads, RELEASED_CLASSES)
  if trained:
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    targets = torch.zeros(BATCH, RELEASED_CLASSES)
    targets[:, :3] = 1.0
    x = records(leads)
    for step in range(TRAIN_STEPS):
      optimizer.zero_grad()
      crop = channels_first(x[:, TRAIN_LENGTH * step : TRAIN_LENGTH * (step + 1)])
      loss = torch.nn.functional.binary_cross_entropy_with_logits(network(crop), targets)
      loss.backward()
      optimizer.step()
  return network.eval()


@functools.cache
def apply_fn(backbone: str, num_classes: int, train: bool = False):
  """The jitted eval-mode (or train-mode, with a dropout key) forward of the Flax backbone."""
  model = models.get(backbone, num_classes)
  if train:
    return jax.jit(
      lambda variables, x, rng: model.apply(
        variables, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
      )[0]
    )
  return jax.jit(lambda variables, x: model.apply(variables, x))


def max_abs_difference(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def flat(variables) -> dict:
  return flax.traverse_util.flatten_dict(variables)


@pytest.mark.parametrize(("leads", "expected"), [(12, 30_752_646), (1, 30_741_382)])
def test_parameter_count_is_the_twins(leads, expected):
  """Equal to the twin's parameters that the forward uses; the twin's total also counts the
  BatchNorm1d modules the reference builds and never calls (they are in its state_dict)."""
  shapes = jax.eval_shape(
    lambda: models.get("net1d", RELEASED_CLASSES).init(
      jax.random.key(0), jnp.zeros((1, 256, leads))
    )
  )
  ours = sum(leaf.size for leaf in jax.tree.leaves(shapes))
  network = torch_twins.Net1D(leads, RELEASED_CLASSES)
  network(torch.zeros(1, leads, 256)).sum().backward()
  used = sum(p.numel() for p in network.parameters() if p.grad is not None)
  total = sum(p.numel() for p in network.parameters())
  bn_parameters = sum(
    p.numel()
    for module in network.modules()
    if isinstance(module, torch.nn.BatchNorm1d)
    for p in module.parameters()
  )
  print(f"net1d {leads} leads: {ours:,} parameters; twin total {total:,}")
  assert ours == used == expected
  assert total - used == bn_parameters == UNUSED_BN_PARAMETERS


# One lead changes only the stem's input width: the briefly trained twin is checked at 12 leads.
@pytest.mark.parametrize(
  ("leads", "trained"), [(12, False), (1, False), (12, True)], ids=["random", "1-lead", "trained"]
)
def test_converted_twin_gives_the_twins_logits(leads, trained):
  network = twin(leads, trained)
  variables = interop.from_torch("net1d", network.state_dict(), RELEASED_CLASSES, leads)
  x = records(leads)
  with torch.no_grad():
    expected = network(channels_first(x)).numpy()
  difference = max_abs_difference(
    apply_fn("net1d", RELEASED_CLASSES)(variables, x).logits, expected
  )
  print(
    f"net1d {leads} leads {'trained' if trained else 'random'}: max |logit difference| "
    f"{difference:.1e} (logits up to {np.abs(expected).max():.2f})"
  )
  assert difference < 1e-4


def test_round_trip_is_exact_and_loads_into_the_twin():
  state_dict = twin(12, True).state_dict()
  back = interop.to_torch("net1d", interop.from_torch("net1d", state_dict, RELEASED_CLASSES, 12))
  assert set(back) == set(state_dict)
  for key, value in state_dict.items():
    assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
  torch_twins.Net1D(12, RELEASED_CLASSES).load_state_dict(back)  # strict


def test_a_new_head_for_other_classes_keeps_the_backbone():
  checkpoint = {"state_dict": twin(12, True).state_dict(), "epoch": 7}
  released = flat(interop.from_torch("net1d", checkpoint, RELEASED_CLASSES, 12))
  fine_tune = flat(interop.from_torch("net1d", checkpoint, TARGET_CLASSES, 12, head_rng=0))
  head = {("params", "dense", "kernel"), ("params", "dense", "bias")}
  assert set(fine_tune) == set(released)
  for path in set(released) - head:
    np.testing.assert_array_equal(fine_tune[path], released[path], err_msg=str(path))
  kernel, bias = fine_tune[("params", "dense", "kernel")], fine_tune[("params", "dense", "bias")]
  assert kernel.shape == (1024, TARGET_CLASSES) and bias.shape == (TARGET_CLASSES,)
  # PyTorch's nn.Linear start: uniform in +-1/sqrt(1024), not all alike.
  for values in (kernel, bias):
    assert 0 < float(jnp.std(values)) and float(jnp.max(jnp.abs(values))) <= 1024**-0.5
  # The seed decides the head; a key does as well as an int.
  again = flat(interop.from_torch("net1d", checkpoint, TARGET_CLASSES, 12, head_rng=0))
  as_key = flat(
    interop.from_torch("net1d", checkpoint, TARGET_CLASSES, 12, head_rng=jax.random.key(0))
  )
  other = flat(interop.from_torch("net1d", checkpoint, TARGET_CLASSES, 12, head_rng=1))
  for path in head:
    np.testing.assert_array_equal(again[path], fine_tune[path])
    np.testing.assert_array_equal(as_key[path], fine_tune[path])
    assert not np.array_equal(other[path], fine_tune[path])
  # The features are the released network's: the new head reads them.
  x = records(12)
  out = apply_fn("net1d", TARGET_CLASSES)(flax.traverse_util.unflatten_dict(fine_tune), x)
  with torch.no_grad():
    _, features = twin(12, True).logits_and_features(channels_first(x))
  assert out.logits.shape == (BATCH, TARGET_CLASSES)
  assert max_abs_difference(out.features, features.numpy()) < 1e-4
  # With the released class count the head loads, head_rng or not.
  same = flat(interop.from_torch("net1d", checkpoint, RELEASED_CLASSES, 12, head_rng=0))
  for path in head:
    np.testing.assert_array_equal(same[path], released[path])


def test_another_class_count_without_head_rng_is_an_error_that_says_what_to_do():
  state_dict = twin(1, False).state_dict()
  with pytest.raises(
    interop.StateDictError,
    match=r"'dense\.weight' has shape \(150, 1024\), expected \(5, 1024\).*pass head_rng",
  ):
    interop.from_torch("net1d", state_dict, TARGET_CLASSES, 1)


def test_head_rng_does_not_excuse_a_wrong_lead_count():
  state_dict = twin(1, False).state_dict()
  with pytest.raises(
    interop.StateDictError,
    match=r"'first_conv\.conv\.weight' has shape \(64, 1, 16\), expected \(64, 12, 16\)",
  ):
    interop.from_torch("net1d", state_dict, TARGET_CLASSES, 12, head_rng=0)


def test_the_unused_batch_norms_are_still_required():
  """They are part of the reference's state_dict: a file without them is not a Net1D's."""
  state_dict = dict(twin(1, False).state_dict())
  del state_dict["stage_list.0.block_list.0.bn1.running_var"]
  with pytest.raises(
    interop.StateDictError,
    match=r"1 missing: 'stage_list\.0\.block_list\.0\.bn1\.running_var' \(shape \(64,\)\)",
  ):
    interop.from_torch("net1d", state_dict, RELEASED_CLASSES, 1)


SMALL = dict(base_filters=8, filters=(8, 16, 24), blocks=(2, 1, 2), groups_width=4)


@pytest.fixture
def small_net1d_with_bn(monkeypatch):
  """A small Net1D with BN and dropout under its own registry name, with the net1d layout."""
  name = "net1d_small_bn"
  options = dict(SMALL, kernel_size=5, use_bn=True, use_dropout=True)
  monkeypatch.setitem(registry._REGISTRY, name, functools.partial(net1d.Net1D, **options))
  monkeypatch.setitem(interop.LAYOUTS, name, layouts.net1d_ecgfounder)
  return name


def test_the_bn_and_dropout_options_compute_the_twins_function(small_net1d_with_bn):
  """Trained in train mode (BN statistics move, dropout on), then compared in eval mode."""
  leads = 12
  torch.manual_seed(0)
  network = torch_twins.Net1D(leads, TARGET_CLASSES, kernel=5, use_bn=True, use_do=True, **SMALL)
  optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
  x = records(leads)
  for _ in range(TRAIN_STEPS):
    optimizer.zero_grad()
    network(channels_first(x)).square().mean().backward()
    optimizer.step()
  network.eval()
  variables = interop.from_torch(small_net1d_with_bn, network.state_dict(), TARGET_CLASSES, leads)
  assert set(variables) == {"params", "batch_stats"}
  with torch.no_grad():
    expected = network(channels_first(x)).numpy()
  logits = apply_fn(small_net1d_with_bn, TARGET_CLASSES)(variables, x).logits
  assert max_abs_difference(logits, expected) < 1e-4
  train_out = apply_fn(small_net1d_with_bn, TARGET_CLASSES, train=True)(
    variables, x, jax.random.key(0)
  )
  assert not np.allclose(train_out.logits, expected)  # dropout and batch statistics act


def test_feature_maps_are_the_stages():
  model = models.get("net1d", TARGET_CLASSES, **SMALL)
  x = jnp.zeros((1, 997, 1))
  out, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))
  # The stem and every stage halve the length, rounding up.
  assert [m.shape for m in out.feature_maps] == [(1, 250, 8), (1, 125, 16), (1, 63, 24)]
  assert out.features.shape == (1, 24) and out.logits.dtype == jnp.float32
