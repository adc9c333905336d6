"""pyproject.toml: the base install exports StableHLO, and resolves to the libraries that the
extras (jax2onnx's requirements among them) resolve to."""

import importlib.metadata
import importlib.util
import pathlib
import tomllib

from packaging.requirements import Requirement

PYPROJECT = pathlib.Path(__file__).parent.parent / "pyproject.toml"


def _base_requirements() -> dict[str, Requirement]:
  project = tomllib.loads(PYPROJECT.read_text())["project"]
  requirements = (Requirement(text) for text in project["dependencies"])
  return {requirement.name.lower(): requirement for requirement in requirements}


def test_the_base_install_has_what_jax_needs_to_serialize_stablehlo():
  serialization = pathlib.Path(importlib.util.find_spec("jax").origin).parent / "_src" / "export"
  assert "import flatbuffers" in (serialization / "serialization.py").read_text()
  assert "flatbuffers" in _base_requirements()


def test_the_base_orbax_is_one_that_jax2onnx_accepts():
  """Without the bound, `pip install -e .` took Orbax 0.12 and the test extra downgraded it."""
  base = _base_requirements()["orbax-checkpoint"].specifier
  (onnx_side,) = [
    requirement.specifier
    for requirement in map(Requirement, importlib.metadata.requires("jax2onnx"))
    if requirement.name == "orbax-checkpoint"
  ]
  bounds = {spec.version for spec in [*base, *onnx_side]}
  for version in bounds | {"0.11.36", "0.11.37", "0.12.0", "0.12.8", "1.0"}:
    assert not base.contains(version) or onnx_side.contains(version), version
  assert base.contains(importlib.metadata.version("orbax-checkpoint"))
