"""PyTorch twins of lead_kt's backbones, written here, whose ``state_dict`` keys are those of the
reference code's networks.

``fcn_wang``, ``resnet1d_wang``, ``xresnet1d101``, ``xresnet1d50`` and ``inception1d`` name their
modules as the PTB-XL benchmark's ``code/models/`` does (fastai v1 style, mostly ``nn.Sequential``
indices); ``xresnet1d101_wide`` as the MVKT code's ``models/xresnet_1d.py``; ``net1d`` as
ECGFounder's ``net1d.py`` (PKUDigitalHealth/ECGFounder). Channels-first: the input is
``[B, leads, T]``. ``forward`` returns the logits, as the references do;
``logits_and_features`` also gives the pooled features. The tests load their weights into the Flax
models (``lead_kt.interop``) and ``lead_kt.bench`` times them beside JAX.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv1d(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv1d:
  """Bias-free Conv1d with the references' padding (k - 1) // 2."""
  return nn.Conv1d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True):
  """Conv1d (key ``.0``) -> BatchNorm1d (``.1``) -> optional ReLU."""
  layers = [conv1d(c_in, c_out, kernel, stride), nn.BatchNorm1d(c_out)]
  return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class ConcatPool(nn.Module):
  """Global max and average over time, concatenated: ``[B, C, T]`` -> ``[B, 2C, 1]``."""

  def __init__(self, max_first: bool = True):
    super().__init__()
    self.max_first = max_first

  def forward(self, x):
    pools = [x.amax(dim=2, keepdim=True), x.mean(dim=2, keepdim=True)]
    return torch.cat(pools if self.max_first else pools[::-1], dim=1)


def benchmark_head(channels: int, num_classes: int, hidden: int = 128) -> nn.Sequential:
  """The benchmark's ``create_head1d(lin_ftrs=[128], ps=0.5)``: pool, flatten, then BN (key ``.2``)
  -> Dropout(0.25) -> Linear (``.4``) -> ReLU -> BN (``.6``) -> Dropout(0.5) -> Linear (``.8``)."""
  return nn.Sequential(
    ConcatPool(),
    nn.Flatten(),
    nn.BatchNorm1d(2 * channels),
    nn.Dropout(0.25),
    nn.Linear(2 * channels, hidden),
    nn.ReLU(),
    nn.BatchNorm1d(hidden),
    nn.Dropout(0.5),
    nn.Linear(hidden, num_classes),
  )


class HeadedSequential(nn.Sequential):
  """Body modules, then a ``benchmark_head`` last, numbered as the references' nn.Sequential."""

  def logits_and_features(self, x):
    *body, head = self
    for layer in body:
      x = layer(x)
    features = head[1](head[0](x))
    return head[2:](features), features

  def forward(self, x):
    return self.logits_and_features(x)[0]


def fcn_wang(leads: int, num_classes: int) -> HeadedSequential:
  """Keys ``{i}.0.0`` (conv), ``{i}.0.1`` (BN) for layers i = 0..2, head at ``3``."""
  widths, kernels = (128, 256, 128), (8, 5, 3)
  # Each layer sits one Sequential deeper, as the benchmark's basic_conv1d wraps its _conv1d.
  layers = [
    nn.Sequential(conv_bn(c_in, c_out, kernel))
    for c_in, c_out, kernel in zip((leads, *widths[:-1]), widths, kernels, strict=True)
  ]
  return HeadedSequential(*layers, benchmark_head(widths[-1], num_classes))


class BasicBlock(nn.Module):
  """The benchmark's BasicBlock1d: ``conv1``/``bn1`` (strided), ``conv2``/``bn2`` and a
  ``downsample`` (strided conv1x1 ``.0`` + BN ``.1``) where the stride or the width changes."""

  def __init__(self, c_in: int, width: int, stride: int, kernels: Sequence[int] = (5, 3)):
    super().__init__()
    self.conv1 = conv1d(c_in, width, kernels[0], stride)
    self.bn1 = nn.BatchNorm1d(width)
    self.conv2 = conv1d(width, width, kernels[1])
    self.bn2 = nn.BatchNorm1d(width)
    self.downsample = None
    if stride != 1 or c_in != width:
      self.downsample = nn.Sequential(conv1d(c_in, width, 1, stride), nn.BatchNorm1d(width))

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def resnet1d_wang(leads: int, num_classes: int) -> HeadedSequential:
  """Stem conv ``0`` / BN ``1``, one BasicBlock per stage at ``{3 + s}.0``, head at ``6``."""
  width = 128
  stages = [nn.Sequential(BasicBlock(width, width, stride)) for stride in (1, 2, 2)]
  stem = [conv1d(leads, width, 7), nn.BatchNorm1d(width), nn.ReLU()]
  return HeadedSequential(*stem, *stages, benchmark_head(width, num_classes))


def bottleneck_convs(c_in: int, hidden: int, c_out: int, kernel: int, stride: int):
  """conv1x1 -> conv k (strided) -> conv1x1 without ReLU, each a ``conv_bn`` (keys ``{j}.0/1``)."""
  return nn.Sequential(
    conv_bn(c_in, hidden, 1),
    conv_bn(hidden, hidden, kernel, stride),
    conv_bn(hidden, c_out, 1, relu=False),
  )


class ResBlock(nn.Module):
  """The benchmark's xresnet ResBlock: ``convs``, also registered as ``convpath.0`` (so the
  state_dict holds both names), and ``idpath``: AvgPool(2, ceil) when strided, then conv1x1 + BN
  when the width changes."""

  def __init__(self, c_in: int, hidden: int, c_out: int, kernel: int, stride: int):
    super().__init__()
    self.convs = bottleneck_convs(c_in, hidden, c_out, kernel, stride)
    self.convpath = nn.Sequential(self.convs)
    identity = [nn.AvgPool1d(2, ceil_mode=True)] if stride != 1 else []
    if c_in != c_out:
      identity.append(conv_bn(c_in, c_out, 1, relu=False))
    self.idpath = nn.Sequential(*identity)

  def forward(self, x):
    return F.relu(self.convpath(x) + self.idpath(x))


def _xresnet_stem(leads: int, widths: Sequence[int], kernel: int) -> list[nn.Sequential]:
  """Three ``conv_bn``, the first strided."""
  return [
    conv_bn(c_in, c_out, kernel, 2 if i == 0 else 1)
    for i, (c_in, c_out) in enumerate(zip((leads, *widths[:-1]), widths, strict=True))
  ]


def _xresnet_stages(block: Callable, blocks, widths, c_in: int, expansion: int, kernel: int):
  """One nn.Sequential of ``block(c_in, hidden, c_out, kernel, stride)`` per stage."""
  stages = []
  for stage, (depth, hidden) in enumerate(zip(blocks, widths, strict=True)):
    layers = []
    for i in range(depth):
      stride = 2 if stage > 0 and i == 0 else 1
      layers.append(block(c_in, hidden, hidden * expansion, kernel, stride))
      c_in = hidden * expansion
    stages.append(nn.Sequential(*layers))
  return stages


def xresnet1d(blocks: Sequence[int], leads: int, num_classes: int) -> HeadedSequential:
  """The benchmark's xresnet1d: stem ``0..2``, MaxPool ``3``, stages ``4..7``, head ``8``."""
  kernel, stem_widths, width, expansion = 5, (32, 32, 64), 64, 4
  stem = _xresnet_stem(leads, stem_widths, kernel)
  stages = _xresnet_stages(
    ResBlock, blocks, (width,) * len(blocks), stem_widths[-1], expansion, kernel
  )
  head = benchmark_head(width * expansion, num_classes)
  return HeadedSequential(*stem, nn.MaxPool1d(3, 2, 1), *stages, head)


class MvktBlock(nn.Module):
  """The MVKT code's XResNetBlock: ``convs``, ``id_conv`` (conv1x1 + BN where the width changes)
  after ``pool`` (AvgPool(2, ceil) when strided)."""

  def __init__(self, c_in: int, hidden: int, c_out: int, kernel: int, stride: int):
    super().__init__()
    self.convs = bottleneck_convs(c_in, hidden, c_out, kernel, stride)
    self.id_conv = conv_bn(c_in, c_out, 1, relu=False) if c_in != c_out else nn.Identity()
    self.pool = nn.AvgPool1d(2, ceil_mode=True) if stride != 1 else nn.Identity()

  def forward(self, x):
    return F.relu(self.convs(x) + self.id_conv(self.pool(x)))


class MvktXResNet(nn.Module):
  """The MVKT code's XResNet (our ``xresnet1d101_wide``): ``stem.{0..2}``, ``res_layers.{s}.{b}``,
  ``fc``; pooling (average, max) straight into ``fc``."""

  def __init__(self, blocks: Sequence[int], leads: int, num_classes: int):
    super().__init__()
    kernel, stem_widths, widths, expansion = 3, (32, 64, 64), (64, 128, 256, 512), 4
    self.stem = nn.Sequential(*_xresnet_stem(leads, stem_widths, kernel))
    self.maxpool = nn.MaxPool1d(3, 2, 1)
    stages = _xresnet_stages(MvktBlock, blocks, widths, stem_widths[-1], expansion, kernel)
    self.res_layers = nn.Sequential(*stages)
    self.pool = ConcatPool(max_first=False)
    self.fc = nn.Linear(2 * widths[-1] * expansion, num_classes)

  def logits_and_features(self, x):
    features = self.pool(self.res_layers(self.maxpool(self.stem(x)))).flatten(1)
    return self.fc(features), features

  def forward(self, x):
    return self.logits_and_features(x)[0]


class InceptionBlock(nn.Module):
  """The benchmark's InceptionBlock1d: ``bottleneck`` conv1x1, ``convs.{k}`` per kernel size,
  ``conv_bottle`` (MaxPool(3) ``.0``, conv1x1 ``.1``), then ``bn_relu`` (BN ``.0``, ReLU)."""

  def __init__(self, c_in: int, filters: int, kernels: Sequence[int], bottleneck: int):
    super().__init__()
    self.bottleneck = conv1d(c_in, bottleneck, 1)
    self.convs = nn.ModuleList([conv1d(bottleneck, filters, k) for k in kernels])
    self.conv_bottle = nn.Sequential(nn.MaxPool1d(3, 1, padding=1), conv1d(c_in, filters, 1))
    self.bn_relu = nn.Sequential(nn.BatchNorm1d(filters * (len(kernels) + 1)), nn.ReLU())

  def forward(self, x):
    bottled = self.bottleneck(x)
    branches = [conv(bottled) for conv in self.convs]
    return self.bn_relu(torch.cat([*branches, self.conv_bottle(x)], dim=1))


class Shortcut(nn.Module):
  """The benchmark's Shortcut1d: ReLU(out + BN(conv1x1(group input))), keys ``conv``, ``bn``."""

  def __init__(self, c_in: int, c_out: int):
    super().__init__()
    self.conv = conv1d(c_in, c_out, 1)
    self.bn = nn.BatchNorm1d(c_out)

  def forward(self, group_input, out):
    return F.relu(out + self.bn(self.conv(group_input)))


class InceptionBackbone(nn.Module):
  """Blocks ``im.{d}``, a ``Shortcut`` ``sk.{g}`` around every three."""

  def __init__(self, leads: int, depth: int = 6, filters: int = 32, bottleneck: int = 32):
    super().__init__()
    kernels, width = (39, 19, 9), filters * 4
    self.im = nn.ModuleList(
      [
        InceptionBlock(leads if d == 0 else width, filters, kernels, bottleneck)
        for d in range(depth)
      ]
    )
    self.sk = nn.ModuleList(
      [Shortcut(leads if g == 0 else width, width) for g in range(depth // 3)]
    )

  def forward(self, x):
    group_input = x
    for d, block in enumerate(self.im):
      x = block(x)
      if d % 3 == 2:
        x = group_input = self.sk[d // 3](group_input, x)
    return x


class Inception1d(nn.Module):
  """The benchmark's Inception1d: ``layers.0`` the backbone, ``layers.1`` the head."""

  def __init__(self, leads: int, num_classes: int):
    super().__init__()
    self.layers = HeadedSequential(InceptionBackbone(leads), benchmark_head(128, num_classes))

  def logits_and_features(self, x):
    return self.layers.logits_and_features(x)

  def forward(self, x):
    return self.layers(x)


class SamePadConv1d(nn.Module):
  """ECGFounder's MyConv1dPadSame: a biased Conv1d (key ``.conv``) padded "same" as TensorFlow
  pads, ``p // 2`` zeros on the left and the rest on the right."""

  def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
    super().__init__()
    self.conv = nn.Conv1d(c_in, c_out, kernel, stride, groups=groups)

  def forward(self, x):
    length, kernel, stride = x.shape[-1], self.conv.kernel_size[0], self.conv.stride[0]
    total = max(0, (-(-length // stride) - 1) * stride + kernel - length)
    return self.conv(F.pad(x, (total // 2, total - total // 2)))


def max_pool_same(x, window: int):
  """ECGFounder's MyMaxPool1dPadSame: zeros (not -inf) padded as the convolutions pad, then
  MaxPool1d(window)."""
  pad = window - 1
  return F.max_pool1d(F.pad(x, (pad // 2, pad - pad // 2)), window)


class Net1DBlock(nn.Module):
  """ECGFounder's BasicBlock: ``bn{i}`` (built even without BN, as the reference does, so that
  its state_dict has them) -> Swish -> dropout -> ``conv{i}`` for i = 1..3, squeeze-and-excitation
  ``se_fc1``/``se_fc2``, identity max-pooled when strided and zero-padded on the channels."""

  def __init__(self, c_in, width, kernel, stride, groups, first, use_bn, use_do, ratio=1.0):
    super().__init__()
    middle = int(width * ratio)
    self.stride, self.first, self.use_bn, self.use_do = stride, first, use_bn, use_do
    self.bn1 = nn.BatchNorm1d(c_in)
    self.conv1 = SamePadConv1d(c_in, middle, 1)
    self.bn2 = nn.BatchNorm1d(middle)
    self.conv2 = SamePadConv1d(middle, middle, kernel, stride, groups)
    self.bn3 = nn.BatchNorm1d(middle)
    self.conv3 = SamePadConv1d(middle, width, 1)
    self.se_fc1 = nn.Linear(width, width // 2)
    self.se_fc2 = nn.Linear(width // 2, width)
    self.dropout = nn.Dropout(0.5)

  def _preactivation(self, x, norm):
    x = F.silu(norm(x) if self.use_bn else x)
    return self.dropout(x) if self.use_do else x

  def forward(self, x):
    y = self.conv1(x if self.first else self._preactivation(x, self.bn1))
    y = self.conv2(self._preactivation(y, self.bn2))
    y = self.conv3(self._preactivation(y, self.bn3))
    gate = torch.sigmoid(self.se_fc2(F.silu(self.se_fc1(y.mean(-1)))))
    identity = max_pool_same(x, self.stride) if self.stride > 1 else x
    extra = y.shape[1] - x.shape[1]
    return y * gate[:, :, None] + F.pad(identity, (0, 0, extra // 2, extra - extra // 2))


class Net1DStage(nn.Module):
  """Blocks ``block_list.{b}``, the first strided."""

  def __init__(self, c_in, width, depth, kernel, stride, groups, first_stage, use_bn, use_do):
    super().__init__()
    self.block_list = nn.ModuleList(
      [
        Net1DBlock(
          c_in if b == 0 else width,
          width,
          kernel,
          stride if b == 0 else 1,
          groups,
          first_stage and b == 0,
          use_bn,
          use_do,
        )
        for b in range(depth)
      ]
    )

  def forward(self, x):
    for block in self.block_list:
      x = block(x)
    return x


class Net1D(nn.Module):
  """ECGFounder's Net1D (``net1d.py``): ``first_conv`` (stride 2), ``first_bn``,
  ``stage_list.{s}``, ``dense``; the defaults are the released configuration."""

  def __init__(
    self,
    leads: int,
    num_classes: int,
    base_filters: int = 64,
    filters: Sequence[int] = (64, 160, 160, 400, 400, 1024, 1024),
    blocks: Sequence[int] = (2, 2, 2, 3, 3, 4, 4),
    kernel: int = 16,
    stride: int = 2,
    groups_width: int = 16,
    use_bn: bool = False,
    use_do: bool = False,
  ):
    super().__init__()
    self.use_bn = use_bn
    self.first_conv = SamePadConv1d(leads, base_filters, kernel, 2)
    self.first_bn = nn.BatchNorm1d(base_filters)
    stages, c_in = [], base_filters
    for s, (width, depth) in enumerate(zip(filters, blocks, strict=True)):
      stages.append(
        Net1DStage(
          c_in, width, depth, kernel, stride, width // groups_width, s == 0, use_bn, use_do
        )
      )
      c_in = width
    self.stage_list = nn.ModuleList(stages)
    self.dense = nn.Linear(c_in, num_classes)

  def logits_and_features(self, x):
    x = self.first_conv(x)
    x = F.silu(self.first_bn(x) if self.use_bn else x)
    for stage in self.stage_list:
      x = stage(x)
    features = x.mean(-1)
    return self.dense(features), features

  def forward(self, x):
    return self.logits_and_features(x)[0]


BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
  "fcn_wang": fcn_wang,
  "resnet1d_wang": resnet1d_wang,
  "xresnet1d101": lambda leads, classes: xresnet1d((3, 4, 23, 3), leads, classes),
  "xresnet1d50": lambda leads, classes: xresnet1d((3, 4, 6, 3), leads, classes),
  "inception1d": Inception1d,
  "xresnet1d101_wide": lambda leads, classes: MvktXResNet((3, 4, 23, 3), leads, classes),
  "net1d": Net1D,
}


def build(backbone: str, leads: int, num_classes: int) -> nn.Module:
  """The twin of lead_kt backbone ``backbone`` for ``leads`` input leads."""
  if backbone not in BUILDERS:
    raise ValueError(f"no PyTorch twin of {backbone!r}; twins: {', '.join(BUILDERS)}")
  return BUILDERS[backbone](leads, num_classes)
