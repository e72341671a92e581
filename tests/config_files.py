"""The repository's config files (configs/*.py) for tests: the one source of every setting."""

import importlib.util
import os

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str = "test") -> ml_collections.ConfigDict:
  """`configs/<name>.py`'s `get_config()`."""
  spec = importlib.util.spec_from_file_location(f"{name}_config",
                                                os.path.join(ROOT, "configs", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()
