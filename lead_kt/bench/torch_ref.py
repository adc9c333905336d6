"""PyTorch twins of the benchmarked steps, for the side-by-side of ``python -m lead_kt.bench``.

The networks are the twins of every backbone: the reference layouts of
``lead_kt.interop.torch_twins`` (the PTB-XL benchmark's networks, the MVKT code's xresnet,
ECGFounder's Net1D) and ``lead_kt.interop.own_twins`` (cnn_hannun, resnet1d34, reslstm_tse,
cnn_transformer), channels-first as PyTorch's Conv1d wants ``[B, C, T]``. The bench asserts that
each has the Flax model's trainable parameter count.
Two steps: the supervised step (BCE, AdamW) of the teacher/baseline, and the MVKT step (BCE +
multi-label KD from a frozen 12-lead teacher + CRD-style NCE against two memory banks with
momentum updates), on any torch device, in float32 or in lead_kt's bfloat16 policy (float32
parameters, bfloat16 compute under ``torch.autocast``). Needs the optional extra ``[torch]``
(``torch==2.13.0``, a CPU build; a GPU needs a CUDA build of torch).
"""

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lead_kt.interop import own_twins, torch_twins

BUILDERS = {**torch_twins.BUILDERS, **own_twins.BUILDERS}
BACKBONES = tuple(BUILDERS)
METHODS = ("teacher", "baseline", "mvkt")
DTYPES = ("float32", "bfloat16")


class EmbedHead(nn.Module):
  """[Dense(hidden) -> ReLU ->] Dense(dim) -> L2 norm, as lead_kt.models.heads.EmbedHead."""

  def __init__(self, features: int, dim: int, hidden: int):
    super().__init__()
    layers = [nn.Linear(features, hidden), nn.ReLU()] if hidden > 0 else []
    self.net = nn.Sequential(*layers, nn.Linear(hidden if hidden > 0 else features, dim))

  def forward(self, x):
    return F.normalize(self.net(x), dim=1, eps=1e-12)


def build(backbone: str, leads: int, num_classes: int) -> nn.Module:
  if backbone not in BUILDERS:
    raise ValueError(f"torch_ref has no {backbone!r}; known: {', '.join(BACKBONES)}")
  return BUILDERS[backbone](leads, num_classes)


def feature_width(net: nn.Module, leads: int, length: int) -> int:
  """The width of ``net.logits_and_features``' pooled features, from one eval-mode example."""
  training = net.training
  with torch.no_grad():
    example = torch.zeros(1, leads, length, device=next(net.parameters()).device)
    width = net.eval().logits_and_features(example)[1].shape[1]
  net.train(training)
  return width


def trainable_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters() if p.requires_grad)


def mkd_paper(student_logits, teacher_logits, temperature: float = 1.5):
  """MVKT's MKD (paper variant): T^2 * sum_c KL(q_t || q_s), q = softmax((p, 1 - p) / T)."""
  p_s, p_t = torch.sigmoid(student_logits), torch.sigmoid(teacher_logits)
  log_q_s = F.log_softmax(torch.stack([p_s, 1 - p_s], -1) / temperature, -1)
  log_q_t = F.log_softmax(torch.stack([p_t, 1 - p_t], -1) / temperature, -1)
  kl = (log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=(-2, -1))
  return temperature**2 * kl.mean()


class ContrastMemory(nn.Module):
  """CRD's two banks [N, D] with fixed NCE normalisers and momentum updates (no gradient)."""

  def __init__(self, num_items: int, dim: int, negatives: int, temperature=0.07, momentum=0.5):
    super().__init__()
    bound = 1.0 / (dim / 3) ** 0.5
    self.register_buffer("student_bank", torch.rand(num_items, dim) * 2 * bound - bound)
    self.register_buffer("teacher_bank", torch.rand(num_items, dim) * 2 * bound - bound)
    self.z = [None, None]
    self.negatives, self.temperature, self.momentum = negatives, temperature, momentum

  def _nce(self, scores, side: int):
    num_items = self.student_bank.shape[0]
    if self.z[side] is None:
      self.z[side] = (scores.detach().exp().mean() * num_items).item()
    log_p = scores - float(np.log(self.z[side]))
    noise = self.negatives / num_items
    log_den = torch.logaddexp(log_p, torch.full_like(log_p, float(np.log(noise + 1e-7))))
    positive = log_p[:, 0] - log_den[:, 0]
    negatives = (float(np.log(noise)) - log_den[:, 1:]).sum(dim=1)
    return -(positive + negatives).mean()

  def loss(self, s_emb, t_emb, index):
    """NCE of both sides against K uniform negatives; the anchor's own row first."""
    batch, num_items = index.shape[0], self.student_bank.shape[0]
    negatives = torch.randint(num_items, (batch, self.negatives), device=index.device)
    contrast = torch.cat([index[:, None], negatives], 1)
    s_scores = torch.bmm(self.teacher_bank[contrast], s_emb[:, :, None])[..., 0] / self.temperature
    t_scores = torch.bmm(self.student_bank[contrast], t_emb[:, :, None])[..., 0] / self.temperature
    return self._nce(s_scores, 0) + self._nce(t_scores, 1)

  @torch.no_grad()
  def update(self, s_emb, t_emb, index):
    for bank, emb in ((self.student_bank, s_emb), (self.teacher_bank, t_emb)):
      rows = F.normalize(self.momentum * bank[index] + (1 - self.momentum) * emb.detach(), dim=1)
      bank.index_copy_(0, index, rows)


@dataclasses.dataclass
class TorchStep:
  """One training step as a closure over its modules, optimiser and a fixed synthetic batch."""

  run: Callable[[], torch.Tensor]  # returns the step's loss (not waited for)
  num_params: int  # of the trained backbone
  memory: ContrastMemory | None = None  # the MVKT step's banks
  device: torch.device = torch.device("cpu")

  def time(self, steps: int) -> list[float]:
    """Seconds of each of ``steps`` steps, each waited for on the device."""
    seconds = []
    for _ in range(steps):
      start = time.perf_counter()
      self.run()
      self.synchronize()
      seconds.append(time.perf_counter() - start)
    return seconds

  def synchronize(self) -> None:
    """Waits for the device's queued kernels (CUDA runs them asynchronously; CPU does not)."""
    if self.device.type == "cuda":
      torch.cuda.synchronize(self.device)


def make_step(
  method: str,
  backbone: str,
  batch: dict,
  num_classes: int,
  num_train: int,
  negatives: int,
  embed_hidden: int,
  compile_model: bool = False,
  device: str = "cpu",
  dtype: str = "float32",
) -> TorchStep:
  """The ``method`` step on numpy ``batch`` (lead_kt's [B, T, L] layout) on torch ``device``;
  ``embed_hidden`` is the MVKT embedding heads' hidden width (``clt.head_hidden``, 0 = one linear
  layer); ``compile_model`` wraps the networks' and losses' forward in ``torch.compile``. In
  ``dtype`` "bfloat16" the forward runs under ``torch.autocast`` with float32 parameters and
  optimiser state, as lead_kt's bfloat16 option (float32 parameters, bfloat16 compute)."""
  if method not in METHODS:
    raise ValueError(f"torch_ref has no {method!r} step; known: {', '.join(METHODS)}")
  if dtype not in DTYPES:
    raise ValueError(f"torch_ref has no dtype {dtype!r}; known: {', '.join(DTYPES)}")
  device = torch.device(device)
  view = "teacher" if method == "teacher" else "student"
  to_device = lambda array: torch.from_numpy(array).to(device)
  x = to_device(batch[view]).permute(0, 2, 1).contiguous()
  labels = to_device(batch["label"])
  net = build(backbone, x.shape[1], num_classes).to(device)
  trained = [net]
  if method == "mvkt":
    x_teacher = to_device(batch["teacher"]).permute(0, 2, 1).contiguous()
    index = to_device(batch["index"]).long()
    teacher = build(backbone, 12, num_classes).eval().requires_grad_(False).to(device)
    length = x.shape[2]
    embed_s = EmbedHead(feature_width(net, x.shape[1], length), 128, embed_hidden).to(device)
    embed_t = EmbedHead(feature_width(teacher, 12, length), 128, embed_hidden).to(device)
    memory = ContrastMemory(num_train, 128, negatives).to(device)
    trained += [embed_s, embed_t]

    def forward():
      logits, features = net.logits_and_features(x)
      with torch.no_grad():
        t_logits, t_features = teacher.logits_and_features(x_teacher)
      s_emb, t_emb = embed_s(features), embed_t(t_features)
      bce = F.binary_cross_entropy_with_logits(logits, labels)
      clt = memory.loss(s_emb, t_emb, index)
      return bce + mkd_paper(logits, t_logits) + 0.8 * clt, (s_emb, t_emb)

    finish = lambda embeddings: memory.update(*embeddings, index)
  else:

    def forward():
      logits = net(x)
      return F.binary_cross_entropy_with_logits(logits, labels), None

    finish, memory = lambda _: None, None
  params = [p for module in trained for p in module.parameters()]
  optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2)
  precision = (
    functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    if dtype == "bfloat16"
    else contextlib.nullcontext
  )

  def forward_in_precision():
    with precision():
      return forward()

  compiled_forward = torch.compile(forward_in_precision) if compile_model else forward_in_precision

  def run():
    optimizer.zero_grad(set_to_none=True)
    loss, extra = compiled_forward()
    loss.backward()
    optimizer.step()
    finish(extra)
    return loss.detach()

  return TorchStep(run, trainable_count(net), memory, device)


def warm_up(step: TorchStep, warmup: int) -> float:
  """Runs ``max(1, warmup)`` steps; returns the seconds of the first (torch.compile's compile)."""
  first = step.time(1)[0]
  step.time(warmup - 1)
  return first


def measure(step: TorchStep, warmup: int, timed: int) -> tuple[float, list[float]]:
  """``(seconds of the first step, seconds of each timed step)`` after ``warmup`` steps."""
  return warm_up(step, warmup), step.time(timed)
