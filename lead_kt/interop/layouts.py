"""Where each PyTorch state_dict entry of the reference networks lives in lead_kt's Flax variables.

A layout is a list of ``Layer``: one PyTorch module (a Conv1d, BatchNorm1d or Linear) under one or
more state_dict prefixes and the Flax module path holding the same weights. The key names follow
the PTB-XL benchmark's ``code/models/`` (fcn_wang, resnet1d_wang, xresnet1d101/50, inception1d) and
the MVKT code's ``models/xresnet_1d.py`` (our xresnet1d101_wide) and ECGFounder's ``net1d.py``
(net1d); ``lead_kt.interop.torch_twins`` builds networks with exactly these names.
"""

import dataclasses
from collections.abc import Callable

import flax.linen as nn

from lead_kt.models import inception, net1d, wang, xresnet


@dataclasses.dataclass(frozen=True)
class Layer:
  """``kind`` is "conv", "conv_bias" (a Conv1d with a bias), "batch_norm", "linear" or
  "unused_batch_norm" (a BatchNorm1d the reference builds but never calls: its tensors, ``width``
  channels each, have no Flax counterpart). ``torch_prefixes``: the first is the module's name;
  more than one when the reference registers the same module twice (its state_dict then holds
  each tensor under every name). ``head``: the classifier that ``from_torch(..., head_rng=...)``
  may start anew for another number of classes (a "linear" layer)."""

  kind: str
  torch_prefixes: tuple[str, ...]
  flax_path: tuple[str, ...]
  width: int = 0
  head: bool = False


def _conv(prefix: str, *path: str, aliases: tuple[str, ...] = ()) -> Layer:
  return Layer("conv", (prefix, *aliases), path)


def _batch_norm(prefix: str, *path: str, aliases: tuple[str, ...] = ()) -> Layer:
  return Layer("batch_norm", (prefix, *aliases), path)


def _conv_bn(conv: str, norm: str, *path: str, aliases: tuple[str, str] | None = None):
  """A Flax ``ConvBN`` at ``path``: its Conv_0 is PyTorch's ``conv``, its BatchNorm_0 ``norm``."""
  conv_aliases, norm_aliases = ((aliases[0],), (aliases[1],)) if aliases else ((), ())
  return [
    _conv(conv, *path, "Conv_0", aliases=conv_aliases),
    _batch_norm(norm, *path, "BatchNorm_0", aliases=norm_aliases),
  ]


def _benchmark_head(prefix: str) -> list[Layer]:
  """The benchmark head (``create_head1d`` with ``lin_ftrs=[128]``): BN, Linear, BN, Linear at
  indices 2, 4, 6, 8 after the pooling, flattening, dropout and ReLU modules."""
  path = "BenchmarkHead_0"
  return [
    _batch_norm(f"{prefix}.2", path, "BatchNorm_0"),
    Layer("linear", (f"{prefix}.4",), (path, "Dense_0")),
    _batch_norm(f"{prefix}.6", path, "BatchNorm_1"),
    Layer("linear", (f"{prefix}.8",), (path, "Dense_1")),
  ]


def fcn_wang(model: wang.FCNWang) -> list[Layer]:
  layers = []
  for i in range(len(model.filters)):
    layers += _conv_bn(f"{i}.0.0", f"{i}.0.1", f"ConvBN_{i}")
  return layers + _benchmark_head(str(len(model.filters)))


def resnet1d_wang(model: wang.ResNet1dWang) -> list[Layer]:
  layers = _conv_bn("0", "1", "ConvBN_0")
  first_stage = 3  # after the stem's conv, BN and ReLU
  for i, strides in enumerate(model.strides):
    block, path = f"{first_stage + i}.0", f"BasicBlock_{i}"
    layers += _conv_bn(f"{block}.conv1", f"{block}.bn1", path, "ConvBN_0")
    layers += _conv_bn(f"{block}.conv2", f"{block}.bn2", path, "ConvBN_1")
    if strides != 1:  # every block keeps the stem's width, so only a stride needs a projection
      layers += _conv_bn(f"{block}.downsample.0", f"{block}.downsample.1", path, "ConvBN_2")
  return layers + _benchmark_head(str(first_stage + len(model.strides)))


def _xresnet(model: xresnet.XResNet1d, stem: Callable, block_layers: Callable) -> list[Layer]:
  """Stem and bottleneck blocks in the Flax model's order; ``stem(i)`` gives the (conv, BN)
  prefixes of stem layer i, ``block_layers(stage, i, strided, projected)`` the layers of one block
  without its Flax path prefix."""
  layers = []
  for i in range(len(model.stem_widths)):
    layers += _conv_bn(*stem(i), f"ConvBN_{i}")
  width, flax_block = model.stem_widths[-1], 0
  for stage, (depth, hidden) in enumerate(zip(model.blocks, model.widths, strict=True)):
    for i in range(depth):
      out_width = hidden * model.expansion
      strided = stage > 0 and i == 0
      for layer in block_layers(stage, i, strided, width != out_width):
        layers.append(
          dataclasses.replace(layer, flax_path=(f"BottleneckBlock_{flax_block}", *layer.flax_path))
        )
      width, flax_block = out_width, flax_block + 1
  return layers


def xresnet1d_benchmark(model: xresnet.XResNet1d) -> list[Layer]:
  """The benchmark's flat nn.Sequential: stem 0..2, MaxPool 3, one Sequential per stage, head."""
  first_stage = len(model.stem_widths) + 1

  def block_layers(stage, i, strided, projected):
    block = f"{first_stage + stage}.{i}"
    layers = []
    for j in range(3):
      convs, convpath = f"{block}.convs.{j}", f"{block}.convpath.0.{j}"
      layers += _conv_bn(
        f"{convs}.0", f"{convs}.1", f"ConvBN_{j}", aliases=(f"{convpath}.0", f"{convpath}.1")
      )
    if projected:
      identity = f"{block}.idpath.{1 if strided else 0}"  # after the AvgPool when strided
      layers += _conv_bn(f"{identity}.0", f"{identity}.1", "ConvBN_3")
    return layers

  layers = _xresnet(model, lambda i: (f"{i}.0", f"{i}.1"), block_layers)
  return layers + _benchmark_head(str(first_stage + len(model.blocks)))


def xresnet1d_mvkt(model: xresnet.XResNet1d) -> list[Layer]:
  """The MVKT code's XResNet: ``stem``, ``res_layers``, ``fc``."""

  def block_layers(stage, i, strided, projected):
    block = f"res_layers.{stage}.{i}"
    layers = []
    for j in range(3):
      layers += _conv_bn(f"{block}.convs.{j}.0", f"{block}.convs.{j}.1", f"ConvBN_{j}")
    if projected:
      layers += _conv_bn(f"{block}.id_conv.0", f"{block}.id_conv.1", "ConvBN_3")
    return layers

  layers = _xresnet(model, lambda i: (f"stem.{i}.0", f"stem.{i}.1"), block_layers)
  return layers + [Layer("linear", ("fc",), ("Dense_0",))]


def inception1d(model: inception.Inception1d) -> list[Layer]:
  """``layers.0`` the backbone (blocks ``im.{d}``, shortcuts ``sk.{g}``), ``layers.1`` the head,
  in the Flax model's order: each group's blocks, then its shortcut."""
  layers = []
  for d in range(model.depth):
    block, path = f"layers.0.im.{d}", f"InceptionBlock_{d}"
    layers.append(_conv(f"{block}.bottleneck", path, "Conv_0"))
    for k in range(len(model.kernel_sizes)):
      layers.append(_conv(f"{block}.convs.{k}", path, f"Conv_{k + 1}"))
    layers.append(_conv(f"{block}.conv_bottle.1", path, f"Conv_{len(model.kernel_sizes) + 1}"))
    layers.append(_batch_norm(f"{block}.bn_relu.0", path, "BatchNorm_0"))
    if d % model.residual_every == model.residual_every - 1:
      group = d // model.residual_every
      shortcut = f"layers.0.sk.{group}"
      layers += _conv_bn(f"{shortcut}.conv", f"{shortcut}.bn", f"ConvBN_{group}")
  return layers + _benchmark_head("layers.1")


def _same_pad_conv(prefix: str, *path: str) -> Layer:
  """ECGFounder's MyConv1dPadSame at ``prefix``: its biased Conv1d is ``{prefix}.conv``."""
  return Layer("conv_bias", (f"{prefix}.conv",), path)


def net1d_ecgfounder(model: net1d.Net1D) -> list[Layer]:
  """ECGFounder's Net1D: ``first_conv.conv``, ``first_bn``, blocks
  ``stage_list.{s}.block_list.{b}`` (``bn{i}``, ``conv{i}.conv`` for i = 1..3, ``se_fc1``,
  ``se_fc2``), ``dense`` (the head). The reference builds every BatchNorm whether it uses it or not:
  all of them are unused without BN (the released weights), the first block's ``bn1`` always."""

  def norm(prefix: str, width: int, *path: str, used: bool = True) -> Layer:
    if model.use_bn and used:
      return _batch_norm(prefix, *path)
    return Layer("unused_batch_norm", (prefix,), (), width)

  layers = [
    _same_pad_conv("first_conv", "stem"),
    norm("first_bn", model.base_filters, "stem_bn"),
  ]
  c_in = model.base_filters
  for s, (width, depth) in enumerate(zip(model.filters, model.blocks, strict=True)):
    middle = int(width * model.ratio)
    for b in range(depth):
      block, path = f"stage_list.{s}.block_list.{b}", f"stage{s}_block{b}"
      layers += [
        norm(f"{block}.bn1", c_in, path, "bn1", used=s > 0 or b > 0),
        _same_pad_conv(f"{block}.conv1", path, "conv1"),
        norm(f"{block}.bn2", middle, path, "bn2"),
        _same_pad_conv(f"{block}.conv2", path, "conv2"),
        norm(f"{block}.bn3", middle, path, "bn3"),
        _same_pad_conv(f"{block}.conv3", path, "conv3"),
      ]
      for fc in ("se_fc1", "se_fc2"):
        layers.append(Layer("linear", (f"{block}.{fc}",), (path, fc)))
      c_in = width
  return layers + [Layer("linear", ("dense",), ("dense",), head=True)]


LAYOUTS: dict[str, Callable[[nn.Module], list[Layer]]] = {
  "fcn_wang": fcn_wang,
  "resnet1d_wang": resnet1d_wang,
  "xresnet1d101": xresnet1d_benchmark,
  "xresnet1d50": xresnet1d_benchmark,
  "inception1d": inception1d,
  "xresnet1d101_wide": xresnet1d_mvkt,
  "net1d": net1d_ecgfounder,
}
