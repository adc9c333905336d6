"""PyTorch interop: the PTB-XL benchmark's and the MVKT code's state_dicts as lead_kt variables.

``from_torch(backbone, state_dict, num_classes, num_leads)`` gives the Flax variables of
``lead_kt.models.get(backbone, num_classes)``; ``to_torch(backbone, variables)`` the state_dict
back. ``torch_twins`` (needs PyTorch) holds networks with the reference layouts' keys,
``own_twins`` PyTorch twins of the backbones that have no reference code.
"""

from lead_kt.interop.layouts import LAYOUTS
from lead_kt.interop.state_dicts import StateDictError, from_torch, to_torch

__all__ = ["LAYOUTS", "StateDictError", "from_torch", "to_torch"]
