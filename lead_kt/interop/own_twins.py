"""PyTorch twins of the backbones that no reference code defines: ``cnn_hannun``, ``resnet1d34``,
``reslstm_tse`` and ``cnn_transformer`` (with their default options).

No reference ``state_dict`` fixes their layout, so it is our own, written as a PyTorch user would
(``nn.LSTM``, ``nn.TransformerEncoder``); the function and the trainable parameter count are those
of the Flax models. Channels-first input ``[B, leads, T]``; ``forward`` returns the logits and
``logits_and_features`` the pooled features too, as ``torch_twins``' networks do.
``load_flax(twin, variables)`` copies a Flax model's variables into its twin (each twin names the
Flax module of each of its layers), so the tests can check that both compute the same function.
``lead_kt.bench`` times them beside JAX.
"""

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lead_kt.interop.torch_twins import BasicBlock, SamePadConv1d, conv_bn
from lead_kt.models.cnn_transformer import sinusoidal_positions

# What a twin's layer takes from a Flax module: an nn.Module, or (nn.LSTM, "" | "_reverse"), one
# direction of a bidirectional LSTM.
Target = nn.Module | tuple[nn.LSTM, str]


def _prefixed(prefix: str, pairs: Iterator[tuple[str, Target]]) -> Iterator[tuple[str, Target]]:
  for path, target in pairs:
    yield f"{prefix}/{path}", target


def _conv_bn_pairs(path: str, layers: Sequence[nn.Module]) -> Iterator[tuple[str, Target]]:
  """A convolution and its BatchNorm (e.g. a ``torch_twins.conv_bn``) as lead_kt's ConvBN."""
  yield f"{path}/Conv_0", layers[0]
  yield f"{path}/BatchNorm_0", layers[1]


class HannunBlock(nn.Module):
  """[BN-ReLU]-conv(stride)-BN-ReLU-dropout-conv plus the input max-pooled by the stride (ceil)
  and zero-padded on the channels; no activation after the sum."""

  def __init__(self, c_in: int, width: int, stride: int, kernel: int, dropout: float, first: bool):
    super().__init__()
    self.stride, self.extra_channels = stride, width - c_in
    self.bn_in = None if first else nn.BatchNorm1d(c_in)
    self.conv1 = SamePadConv1d(c_in, width, kernel, stride)
    self.bn1 = nn.BatchNorm1d(width)
    self.dropout = nn.Dropout(dropout)
    self.conv2 = SamePadConv1d(width, width, kernel)

  def forward(self, x):
    shortcut = F.max_pool1d(x, self.stride, ceil_mode=True) if self.stride > 1 else x
    if self.extra_channels > 0:
      shortcut = F.pad(shortcut, (0, 0, 0, self.extra_channels))
    y = x if self.bn_in is None else F.relu(self.bn_in(x))
    y = self.dropout(F.relu(self.bn1(self.conv1(y))))
    return self.conv2(y) + shortcut

  def flax_modules(self) -> Iterator[tuple[str, Target]]:
    norms = [f"BatchNorm_{i}" for i in range(2)]
    if self.bn_in is not None:
      yield norms.pop(0), self.bn_in
    yield "Conv_0", self.conv1.conv
    yield norms.pop(0), self.bn1
    yield "Conv_1", self.conv2.conv


class HannunCNN(nn.Module):
  """``cnn_hannun``: stem conv-BN-ReLU, 16 HannunBlocks (width doubling every 4, stride 2 on odd
  blocks), BN-ReLU, average pooling, Linear."""

  def __init__(
    self, leads: int, num_classes: int, base: int = 32, blocks: int = 16, kernel: int = 16
  ):
    super().__init__()
    self.stem_conv = SamePadConv1d(leads, base, kernel)
    self.stem_bn = nn.BatchNorm1d(base)
    layers, c_in = [], base
    for index in range(blocks):
      width = base * 2 ** (index // 4)
      layers.append(HannunBlock(c_in, width, 2 if index % 2 else 1, kernel, 0.2, index == 0))
      c_in = width
    self.blocks = nn.Sequential(*layers)
    self.final_bn = nn.BatchNorm1d(c_in)
    self.fc = nn.Linear(c_in, num_classes)

  def logits_and_features(self, x):
    x = self.blocks(F.relu(self.stem_bn(self.stem_conv(x))))
    features = F.relu(self.final_bn(x)).mean(-1)
    return self.fc(features), features

  def forward(self, x):
    return self.logits_and_features(x)[0]

  def flax_modules(self) -> Iterator[tuple[str, Target]]:
    yield "Conv_0", self.stem_conv.conv
    yield "BatchNorm_0", self.stem_bn
    for index, block in enumerate(self.blocks):
      yield from _prefixed(f"HannunBlock_{index}", block.flax_modules())
    yield "BatchNorm_1", self.final_bn
    yield "Dense_0", self.fc


class ResNet1d(nn.Module):
  """``resnet1d34``: conv7/2-BN-ReLU, MaxPool(3, 2), BasicBlocks (kernel 3) in four stages,
  average pooling, Linear. The last BN of each block starts at zero, as in the Flax model."""

  def __init__(
    self, leads: int, num_classes: int, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512)
  ):
    super().__init__()
    self.stem = conv_bn(leads, widths[0], 7, 2)
    self.pool = nn.MaxPool1d(3, 2, 1)
    layers, c_in = [], widths[0]
    for stage, (depth, width) in enumerate(zip(stage_sizes, widths, strict=True)):
      for index in range(depth):
        layers.append(BasicBlock(c_in, width, 2 if stage > 0 and index == 0 else 1, (3, 3)))
        c_in = width
    self.blocks = nn.Sequential(*layers)
    for block in layers:
      nn.init.zeros_(block.bn2.weight)
    self.fc = nn.Linear(c_in, num_classes)

  def logits_and_features(self, x):
    features = self.blocks(self.pool(self.stem(x))).mean(-1)
    return self.fc(features), features

  def forward(self, x):
    return self.logits_and_features(x)[0]

  def flax_modules(self) -> Iterator[tuple[str, Target]]:
    yield from _conv_bn_pairs("ConvBN_0", self.stem)
    for index, block in enumerate(self.blocks):
      prefix, convs = f"BasicBlock_{index}", []
      if block.downsample is not None:  # The Flax block builds its projection first.
        convs.append(block.downsample)
      convs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
      for number, layers in enumerate(convs):
        yield from _conv_bn_pairs(f"{prefix}/ConvBN_{number}", layers)
    yield "Dense_0", self.fc


def _bidirectional_lstm(size: int) -> nn.LSTM:
  """A bidirectional LSTM of ``size`` outputs, ``size / 2`` per direction. A Flax LSTM cell has
  one bias per gate, PyTorch's two: the hidden-side biases stay zero and frozen."""
  lstm = nn.LSTM(size, size // 2, batch_first=True, bidirectional=True)
  for name in ("bias_hh_l0", "bias_hh_l0_reverse"):
    nn.init.zeros_(getattr(lstm, name))
    getattr(lstm, name).requires_grad_(False)
  return lstm


class ResLSTMTemporalSE(nn.Module):
  """``reslstm_tse``: three strided conv-BN-ReLU, Linear projection, residual bidirectional LSTMs,
  squeeze-and-excitation whose squeeze is softmax attention over time, concat pooling, Linear."""

  def __init__(self, leads: int, num_classes: int, hidden: int = 128, layers: int = 2):
    super().__init__()
    widths, kernel, reduction = (32, 64, 128), 7, 4
    self.front = nn.Sequential(
      *(
        conv_bn(c_in, c_out, kernel, 2)
        for c_in, c_out in zip((leads, *widths[:-1]), widths, strict=True)
      )
    )
    self.projection = nn.Linear(widths[-1], hidden)
    self.lstms = nn.ModuleList(_bidirectional_lstm(hidden) for _ in range(layers))
    self.dropout = nn.Dropout(0.2)
    self.attention = nn.Linear(hidden, 1)
    self.squeeze = nn.Linear(hidden, hidden // reduction)
    self.excite = nn.Linear(hidden // reduction, hidden)
    self.fc = nn.Linear(2 * hidden, num_classes)

  def logits_and_features(self, x):
    x = self.projection(self.front(x).transpose(1, 2))  # [B, N, hidden]
    for lstm in self.lstms:
      x = x + self.dropout(lstm(x)[0])
    descriptor = (torch.softmax(self.attention(x), dim=1) * x).sum(1)
    x = x * torch.sigmoid(self.excite(F.relu(self.squeeze(descriptor))))[:, None]
    features = torch.cat([x.amax(1), x.mean(1)], dim=1)
    return self.fc(self.dropout(features)), features

  def forward(self, x):
    return self.logits_and_features(x)[0]

  def flax_modules(self) -> Iterator[tuple[str, Target]]:
    for index, layers in enumerate(self.front):
      yield from _conv_bn_pairs(f"ConvBN_{index}", layers)
    yield "Dense_0", self.projection
    for index, lstm in enumerate(self.lstms):  # Flax builds each layer's forward cell first.
      yield f"OptimizedLSTMCell_{2 * index}", (lstm, "")
      yield f"OptimizedLSTMCell_{2 * index + 1}", (lstm, "_reverse")
    # The Flax module builds Dense(hidden) before its argument Dense(hidden / reduction).
    squeeze_excitation = ("attention", "excite", "squeeze")
    for index, name in enumerate(squeeze_excitation):
      yield f"TemporalSqueezeExcitation_0/Dense_{index}", getattr(self, name)
    yield "Dense_1", self.fc


class CNNTransformer(nn.Module):
  """``cnn_transformer``: four parallel conv-BN-ReLU branches, a strided token convolution,
  sinusoidal positions, a pre-norm ``nn.TransformerEncoder`` (tanh-approximated GELU, as Flax's
  default), mean pooling, Linear."""

  def __init__(self, leads: int, num_classes: int, d_model: int = 128, max_tokens: int = 1024):
    super().__init__()
    kernels, width, downsample = (3, 7, 15, 31), 32, 8
    self.branches = nn.ModuleList(conv_bn(leads, width, kernel) for kernel in kernels)
    self.tokens = SamePadConv1d(width * len(kernels), d_model, downsample, downsample)
    positions = torch.from_numpy(sinusoidal_positions(max_tokens, d_model))
    self.register_buffer("positions", positions, persistent=False)
    self.dropout = nn.Dropout(0.1)
    layer = nn.TransformerEncoderLayer(
      d_model,
      nhead=4,
      dim_feedforward=256,
      dropout=0.1,
      activation=functools.partial(F.gelu, approximate="tanh"),
      layer_norm_eps=1e-6,
      batch_first=True,
      norm_first=True,
    )
    norm = nn.LayerNorm(d_model, eps=1e-6)
    self.encoder = nn.TransformerEncoder(layer, 4, norm=norm, enable_nested_tensor=False)
    self.fc = nn.Linear(d_model, num_classes)

  def logits_and_features(self, x):
    multi_scale = torch.cat([branch(x) for branch in self.branches], dim=1)
    tokens = self.tokens(multi_scale).transpose(1, 2)  # [B, N, d_model]
    if tokens.shape[1] > self.positions.shape[0]:
      raise ValueError(f"{tokens.shape[1]} tokens exceed the twin's {self.positions.shape[0]}")
    tokens = self.encoder(self.dropout(tokens + self.positions[: tokens.shape[1]]))
    features = tokens.mean(1)
    return self.fc(features), features

  def forward(self, x):
    return self.logits_and_features(x)[0]

  def flax_modules(self) -> Iterator[tuple[str, Target]]:
    for index, layers in enumerate(self.branches):
      yield from _conv_bn_pairs(f"ConvBN_{index}", layers)
    yield "Conv_0", self.tokens.conv
    for index, layer in enumerate(self.encoder.layers):
      prefix = f"TransformerEncoder_0/EncoderBlock_{index}"
      yield f"{prefix}/LayerNorm_0", layer.norm1
      yield f"{prefix}/MultiHeadDotProductAttention_0", layer.self_attn
      yield f"{prefix}/LayerNorm_1", layer.norm2
      yield f"{prefix}/Dense_0", layer.linear1
      yield f"{prefix}/Dense_1", layer.linear2
    yield "TransformerEncoder_0/LayerNorm_0", self.encoder.norm
    yield "Dense_0", self.fc


BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
  "cnn_hannun": HannunCNN,
  "resnet1d34": ResNet1d,
  "reslstm_tse": ResLSTMTemporalSE,
  "cnn_transformer": CNNTransformer,
}


def build(backbone: str, leads: int, num_classes: int) -> nn.Module:
  """The twin of lead_kt backbone ``backbone`` (default options) for ``leads`` input leads."""
  if backbone not in BUILDERS:
    raise ValueError(f"no twin of our own for {backbone!r}; twins: {', '.join(BUILDERS)}")
  return BUILDERS[backbone](leads, num_classes)


def load_flax(twin: nn.Module, variables: Mapping) -> None:
  """Copies the Flax variables (``params``, ``batch_stats``) of a lead_kt backbone into its twin,
  in place; raises ValueError when a shape differs or a Flax variable has no place in the twin."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  copied = 0
  with torch.no_grad():
    for path, target in twin.flax_modules():
      copied += _copy(target, _module(params, path), _module(stats, path, missing_ok=True), path)
  total = len(_leaves(params)) + len(_leaves(stats))
  if copied != total:
    raise ValueError(f"{total - copied} Flax variables have no place in {type(twin).__name__}")


def _module(tree: Mapping, path: str, missing_ok: bool = False) -> Mapping:
  for name in path.split("/"):
    if name not in tree:
      if missing_ok:
        return {}
      raise ValueError(f"the Flax variables have no module {path!r}")
    tree = tree[name]
  return tree


def _leaves(tree) -> list:
  if isinstance(tree, Mapping):
    return [leaf for value in tree.values() for leaf in _leaves(value)]
  return [tree]


def _set(tensor: torch.Tensor, value, path: str) -> int:
  value = torch.from_numpy(np.array(value, dtype=np.float32))
  if value.shape != tensor.shape:
    raise ValueError(f"{path}: Flax shape {tuple(value.shape)}, twin {tuple(tensor.shape)}")
  tensor.copy_(value)
  return 1


def _copy(target: Target, params: Mapping, stats: Mapping, path: str) -> int:
  """Copies one Flax module's variables into ``target``; returns how many Flax arrays it used."""
  if isinstance(target, tuple):
    return _copy_lstm_direction(*target, params, path)
  if isinstance(target, nn.MultiheadAttention):
    return _copy_attention(target, params, path)
  copied = 0
  if isinstance(target, nn.Conv1d | nn.Linear):
    kernel = np.asarray(params["kernel"])
    weight = kernel.transpose(2, 1, 0) if isinstance(target, nn.Conv1d) else kernel.T
    copied += _set(target.weight, weight, f"{path}/kernel")
  elif isinstance(target, nn.BatchNorm1d | nn.LayerNorm):
    copied += _set(target.weight, params["scale"], f"{path}/scale")
    if isinstance(target, nn.BatchNorm1d):
      copied += _set(target.running_mean, stats["mean"], f"{path}/mean")
      copied += _set(target.running_var, stats["var"], f"{path}/var")
  else:
    raise TypeError(f"{path}: no copy into a {type(target).__name__}")
  if "bias" in params:
    copied += _set(target.bias, params["bias"], f"{path}/bias")
  return copied


def _copy_lstm_direction(lstm: nn.LSTM, suffix: str, cell: Mapping, path: str) -> int:
  """Flax's OptimizedLSTMCell (input kernels ``i*``, hidden kernels and biases ``h*``, gates in
  PyTorch's order i, f, g, o) into one direction of a one-layer ``nn.LSTM``."""
  gates = ("i", "f", "g", "o")
  stack = lambda side, leaf: np.concatenate([np.asarray(cell[side + g][leaf]).T for g in gates])
  _set(getattr(lstm, f"weight_ih_l0{suffix}"), stack("i", "kernel"), f"{path}/i*")
  _set(getattr(lstm, f"weight_hh_l0{suffix}"), stack("h", "kernel"), f"{path}/h*")
  _set(getattr(lstm, f"bias_ih_l0{suffix}"), stack("h", "bias"), f"{path}/h*/bias")
  getattr(lstm, f"bias_hh_l0{suffix}").zero_()
  return 3 * len(gates)


def _copy_attention(attention: nn.MultiheadAttention, params: Mapping, path: str) -> int:
  """Flax's MultiHeadDotProductAttention (``query``/``key``/``value`` kernels [D, heads, D/heads],
  ``out`` [heads, D/heads, D]) into ``nn.MultiheadAttention``'s packed projections."""
  width = attention.embed_dim
  flat = lambda name, leaf: np.asarray(params[name][leaf]).reshape(width, -1)
  projections = ("query", "key", "value")
  in_weight = np.concatenate([flat(name, "kernel").T for name in projections])
  in_bias = np.concatenate([np.asarray(params[name]["bias"]).reshape(-1) for name in projections])
  _set(attention.in_proj_weight, in_weight, f"{path}/(query, key, value)/kernel")
  _set(attention.in_proj_bias, in_bias, f"{path}/(query, key, value)/bias")
  _set(attention.out_proj.weight, flat("out", "kernel").T, f"{path}/out/kernel")
  _set(attention.out_proj.bias, params["out"]["bias"], f"{path}/out/bias")
  return 8
