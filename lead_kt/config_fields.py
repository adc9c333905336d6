"""Setting config fields by dotted name (``"clt.num_negatives"``), as the command line does."""

from collections.abc import Iterable
from typing import Any


def set_fields(config, fields: Iterable[tuple[str, Any]]) -> None:
  """Sets each ``(dotted name, value)`` on ``config``; a name that is not a field is an error."""
  for key, value in fields:
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise ValueError(f"{key!r} names no field of the config")
    node[leaf] = value
