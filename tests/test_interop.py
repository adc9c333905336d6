"""lead_kt.interop: trained PyTorch networks of the reference layouts, loaded into lead_kt's Flax
backbones, compute the same function (eval and train mode) and convert back exactly."""

import copy
import functools
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from lead_kt import ecg_io, interop, models

torch = pytest.importorskip("torch")
torch_twins = pytest.importorskip("lead_kt.interop.torch_twins")

NUM_CLASSES = 5
TRAIN_STEPS = 3  # of the twins before comparing, so that the BatchNorm statistics have moved
TRAIN_LENGTH = 100  # samples per training crop: short, because the twins train on 2 CPU cores
BATCH = 4  # two records would make the head BatchNorm degenerate (each value +-1)
SAMPLE = Path(__file__).parents[1] / "data_builders" / "ptbxl" / "sample" / "records100"
# ECGFounder's Net1D (30.8M parameters, no BatchNorm) has its own checks: tests/test_net1d.py.
BACKBONES = [b for b in interop.LAYOUTS if b != "net1d"]
# To keep the suite fast on 2 cores, the two deepest networks are checked at 12 leads only (one
# lead changes nothing but the first convolution's input width, checked on the other four) and
# in eval mode only: their blocks are the Flax modules that xresnet1d50's train-mode check covers
# (xresnet1d101 is xresnet1d50 with 17 more blocks of the same layout).
DEEPEST = ("xresnet1d101", "xresnet1d101_wide")
CASES = [(b, leads) for b in BACKBONES for leads in (1, 12) if leads == 12 or b not in DEEPEST]
TRAINED = [b for b in BACKBONES if b not in DEEPEST]


@functools.cache
def records(leads: int) -> np.ndarray:
  """``[BATCH, 1000, leads]`` float32 mV: the first records of the bundled PTB-XL sample (lead I
  alone for one lead)."""
  signals = []
  for path in ecg_io.find_records(SAMPLE)[:BATCH]:
    record = ecg_io.read_record(path)
    names = ("I",) if leads == 1 else record.lead_names
    signals.append(ecg_io.select_leads(record, names))
  return np.stack(signals).astype(np.float32)


def labels() -> np.ndarray:
  return np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(BATCH) % NUM_CLASSES]


def channels_first(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))


def bce(logits, targets):
  return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


@functools.cache
def trained_twin(backbone: str, leads: int):
  """The twin after ``TRAIN_STEPS`` AdamW steps on crops of the records, in eval mode. Callers
  that train it further deep-copy it."""
  torch.manual_seed(0)
  twin = torch_twins.build(backbone, leads, NUM_CLASSES)
  # After smaller steps (1e-3) the deep twins' train-mode gradients were ill-conditioned in float32
  # (PyTorch's own float32 and float64 ones differed by 4%), too noisy to compare.
  optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-2)
  x, y = records(leads), torch.from_numpy(labels())
  for step in range(TRAIN_STEPS):
    optimizer.zero_grad()
    crop = x[:, TRAIN_LENGTH * step : TRAIN_LENGTH * (step + 1)]
    bce(twin(channels_first(crop)), y).backward()
    optimizer.step()
  return twin.eval()


def without_dropout(next_fun, args, kwargs, context):
  """A flax method interceptor that makes every Dropout the identity."""
  if isinstance(context.module, nn.Dropout):
    return args[0]
  return next_fun(*args, **kwargs)


def max_abs_difference(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize(("backbone", "leads"), CASES)
def test_converted_model_gives_the_twins_logits(backbone, leads):
  twin = trained_twin(backbone, leads)
  variables = interop.from_torch(backbone, twin.state_dict(), NUM_CLASSES, leads)
  model = models.get(backbone, NUM_CLASSES)
  for length in (250, 1000):
    x = records(leads)[:, -length:]
    with torch.no_grad():
      expected = twin(channels_first(x)).numpy()
    logits = model.apply(variables, x, train=False).logits
    difference = max_abs_difference(logits, expected)
    print(f"{backbone} {leads} leads {length} samples: max |logit difference| {difference:.2e}")
    assert difference < 1e-4, (backbone, leads, length)


@pytest.mark.parametrize("backbone", TRAINED)
def test_one_training_step_matches(backbone):
  """BCE in train mode (dropout off), one SGD step: the same loss, updated weights and BatchNorm
  running statistics."""
  leads, learning_rate = 12, 0.1
  twin = copy.deepcopy(trained_twin(backbone, leads)).train()
  variables = interop.from_torch(backbone, twin.state_dict(), NUM_CLASSES, leads)
  for module in twin.modules():
    if isinstance(module, torch.nn.Dropout):
      module.eval()
  x, y = records(leads)[:, -250:], labels()
  optimizer = torch.optim.SGD(twin.parameters(), lr=learning_rate)
  torch_loss = bce(twin(channels_first(x)), torch.from_numpy(y))
  torch_loss.backward()
  optimizer.step()

  model = models.get(backbone, NUM_CLASSES)

  def loss_fn(params):
    with nn.intercept_methods(without_dropout):
      out, state = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
    return optax.sigmoid_binary_cross_entropy(out.logits, y).mean(), state["batch_stats"]

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, batch_stats), grads = step(variables["params"])
  params = jax.tree.map(lambda p, g: p - learning_rate * g, variables["params"], grads)
  print(f"{backbone} train mode: |loss difference| {abs(float(loss) - torch_loss.item()):.2e}")
  assert abs(float(loss) - torch_loss.item()) < 1e-5
  ours = interop.to_torch(backbone, {"params": params, "batch_stats": batch_stats})
  theirs = twin.state_dict()
  for key, value in theirs.items():
    if not key.endswith("num_batches_tracked"):
      np.testing.assert_allclose(
        ours[key].numpy(), value.numpy(), atol=1e-5, rtol=1e-4, err_msg=key
      )


@pytest.mark.parametrize("backbone", BACKBONES)
def test_round_trip_is_exact(backbone):
  state_dict = trained_twin(backbone, 12).state_dict()
  back = interop.to_torch(
    backbone, interop.from_torch(backbone, state_dict, NUM_CLASSES, 12), TRAIN_STEPS
  )
  assert set(back) == set(state_dict)
  for key, value in state_dict.items():
    assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def test_checkpoint_dicts_numpy_values_and_a_data_parallel_prefix_are_accepted():
  state_dict = trained_twin("fcn_wang", 1).state_dict()
  direct = interop.from_torch("fcn_wang", state_dict, NUM_CLASSES, 1)
  as_numpy = {f"module.{key}": value.numpy() for key, value in state_dict.items()}
  for checkpoint in ({"model": as_numpy, "opt": {}}, {"state_dict": as_numpy, "epoch": 3}):
    converted = interop.from_torch("fcn_wang", checkpoint, NUM_CLASSES, 1)
    jax.tree.map(np.testing.assert_array_equal, converted, direct)


def test_a_backbone_without_a_layout_is_refused():
  with pytest.raises(ValueError, match="no PyTorch layout for backbone 'cnn_hannun'; supported"):
    interop.from_torch("cnn_hannun", {}, NUM_CLASSES, 12)


def test_a_state_dict_of_another_backbone_names_the_keys():
  state_dict = trained_twin("fcn_wang", 1).state_dict()
  with pytest.raises(
    interop.StateDictError, match=r"missing: '0\.weight'.*not in the resnet1d_wang"
  ):
    interop.from_torch("resnet1d_wang", state_dict, NUM_CLASSES, 1)


def test_a_missing_key_is_named_with_its_shape():
  state_dict = dict(trained_twin("fcn_wang", 1).state_dict())
  del state_dict["1.0.1.running_var"]
  with pytest.raises(
    interop.StateDictError, match=r"1 missing: '1\.0\.1\.running_var' \(shape \(256,\)\)"
  ):
    interop.from_torch("fcn_wang", state_dict, NUM_CLASSES, 1)


def test_a_wrong_shape_is_named():
  state_dict = trained_twin("fcn_wang", 1).state_dict()
  expected = r"'0\.0\.0\.weight' has shape \(128, 1, 8\), expected \(128, 12, 8\) for fcn_wang"
  with pytest.raises(interop.StateDictError, match=expected):
    interop.from_torch("fcn_wang", state_dict, NUM_CLASSES, 12)


def test_the_two_names_of_one_module_must_agree():
  state_dict = dict(trained_twin("xresnet1d50", 1).state_dict())
  alias = "4.0.convpath.0.0.0.weight"
  state_dict[alias] = state_dict[alias] + 1.0
  with pytest.raises(interop.StateDictError, match=r"'4\.0\.convpath\.0\.0\.0\.weight' differs"):
    interop.from_torch("xresnet1d50", state_dict, NUM_CLASSES, 1)
