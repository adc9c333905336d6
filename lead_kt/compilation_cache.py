"""JAX's persistent compilation cache, on for every lead_kt command.

A train step takes 11-30 s to compile on a CPU. With the cache, a resumed run, the next fold of a
sweep, ``predict`` and ``export`` read the executable from disk instead (JAX keys an entry by the
program, the compile options, the jax version and the device). Each command's ``main`` calls
``enable()`` before anything compiles. Where the executables go:

  JAX_COMPILATION_CACHE_DIR set (JAX's own)   JAX's settings, untouched
  LEAD_KT_COMPILATION_CACHE=off               no cache (JAX's default)
  LEAD_KT_COMPILATION_CACHE=DIR               DIR
  neither                                     $XDG_CACHE_HOME/lead_kt/jax, else ~/.cache/lead_kt/jax

The directory grows without bound (JAX evicts only with ``JAX_COMPILATION_CACHE_MAX_SIZE``, which
needs the ``filelock`` package); deleting it is always safe. Like any JAX cache it is trusted:
whoever can write to it can run code in the processes that read it.
"""

import os

import jax
from absl import logging

ENV_VAR = "LEAD_KT_COMPILATION_CACHE"
OFF = "off"
# Compilations faster than this are not written: reading an entry back costs some milliseconds,
# and the small jitted helpers would fill the directory. Every step function takes far longer.
MIN_COMPILE_SECONDS = 0.5
_MIN_COMPILE_ENV_VAR = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def default_directory() -> str:
  """$XDG_CACHE_HOME/lead_kt/jax, or ~/.cache/lead_kt/jax without XDG_CACHE_HOME."""
  cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache_home, "lead_kt", "jax")


def directory() -> str | None:
  """The directory lead_kt asks for (``LEAD_KT_COMPILATION_CACHE`` or the default); None: off."""
  value = os.environ.get(ENV_VAR, "").strip()
  if value.lower() == OFF:
    return None
  return os.path.abspath(os.path.expanduser(value)) if value else default_directory()


def enable() -> str | None:
  """Turns the persistent cache on as the module docstring says; returns the directory in use
  (None: no cache). A directory that cannot be created leaves the cache off, with a warning."""
  if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR, or the caller's choice
    return jax.config.jax_compilation_cache_dir
  path = directory()
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    logging.warning("no JAX compilation cache: cannot create %s (%s)", path, error)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  if _MIN_COMPILE_ENV_VAR not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  logging.info("JAX compilation cache: %s (%s=off switches it off)", path, ENV_VAR)
  return path
