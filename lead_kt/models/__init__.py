"""Backbones and the modules built on them; import registers every backbone."""

from lead_kt.models import (  # noqa: F401 (imported to register the backbones)
  cnn_transformer,
  hannun,
  inception,
  net1d,
  reslstm,
  resnet,
  wang,
  xresnet,
)
from lead_kt.models.registry import BackboneOutput, get, names, register

__all__ = ["BackboneOutput", "get", "names", "register"]
