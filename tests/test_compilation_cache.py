"""lead_kt.compilation_cache: where the commands' persistent cache goes, that a second process
reads what the first wrote, that "off" writes nothing, and that predict goes through it."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import run_fixture

from lead_kt import compilation_cache

REPO = Path(__file__).parents[1]
CACHE_HITS = "/jax/compilation_cache/cache_hits"
# Prints, as its last line, the directory enable() chose, JAX's threshold and the cache hits of
# one small jitted function (or, given arguments, of lead_kt.predict.main on them).
CHILD = textwrap.dedent(
  f"""
  import json, sys
  import jax, jax.numpy as jnp
  hits = []
  jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event == {CACHE_HITS!r} else None
  )
  from lead_kt import compilation_cache
  if sys.argv[1:]:
    from lead_kt import predict
    code = predict.main(sys.argv[1:])
    directory = jax.config.jax_compilation_cache_dir
  else:
    directory = compilation_cache.enable()
    code = int(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((4, 4))).sum() > 0)
  print(json.dumps({{
    "directory": directory,
    "min_compile_s": jax.config.jax_persistent_cache_min_compile_time_secs,
    "hits": len(hits),
    "code": code,
  }}))
  """
)


def run_child(env: dict[str, str], *args: str) -> dict:
  """CHILD in a fresh process with the test's environment less JAX's and lead_kt's cache
  variables, plus ``env``."""
  base = {
    k: v
    for k, v in os.environ.items()
    if k
    not in (
      "JAX_COMPILATION_CACHE_DIR",
      compilation_cache.ENV_VAR,
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
      "XDG_CACHE_HOME",
    )
  }
  done = subprocess.run(
    [sys.executable, "-c", CHILD, *args],
    env={**base, **env},
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def files(directory: Path) -> set[str]:
  return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_directory_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation_cache.directory() == str(tmp_path / "xdg" / "lead_kt" / "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compilation_cache.directory() == str(tmp_path / "home" / ".cache" / "lead_kt" / "jax")
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / "mine"))
  assert compilation_cache.directory() == str(tmp_path / "mine")
  for off in ("off", "OFF", " off "):
    monkeypatch.setenv(compilation_cache.ENV_VAR, off)
    assert compilation_cache.directory() is None


def test_a_second_process_reads_what_the_first_wrote(tmp_path):
  cache = tmp_path / "cache"
  # Every compilation is written (the tiny function compiles faster than the default threshold).
  env = {compilation_cache.ENV_VAR: str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  first = run_child(env)
  assert first["directory"] == str(cache) and first["hits"] == 0
  written = files(cache)
  assert written
  second = run_child(env)
  assert second["hits"] >= 1
  assert files(cache) == written  # Read, not compiled and written again.


def test_default_directory_and_threshold(tmp_path):
  result = run_child({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
  assert result["directory"] == str(tmp_path / "xdg" / "lead_kt" / "jax")
  assert (tmp_path / "xdg" / "lead_kt" / "jax").is_dir()
  assert result["min_compile_s"] == compilation_cache.MIN_COMPILE_SECONDS


def test_off_writes_nothing(tmp_path):
  env = {
    compilation_cache.ENV_VAR: "off",
    "XDG_CACHE_HOME": str(tmp_path),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }
  result = run_child(env)
  assert result["directory"] is None and result["hits"] == 0
  assert not files(tmp_path)


def test_jax_compilation_cache_dir_wins(tmp_path):
  env = {
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax"),
    compilation_cache.ENV_VAR: str(tmp_path / "ours"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }
  result = run_child(env)
  assert result["directory"] == str(tmp_path / "jax")
  assert files(tmp_path / "jax") and not (tmp_path / "ours").exists()


def test_predict_reuses_the_cache_of_a_previous_process(run_dir, tmp_path):
  cache = tmp_path / "cache"
  env = {compilation_cache.ENV_VAR: str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  record = run_fixture.ptbxl_test_records(run_dir)[0]
  argv = ["--workdir", run_dir, "--input", record, "--output", str(tmp_path / "out.csv")]
  first = run_child(env, *argv)
  assert first["code"] == 0 and first["directory"] == str(cache)
  written = files(cache)
  assert written
  second = run_child(env, *argv)
  assert second["code"] == 0 and second["hits"] >= 1
  assert files(cache) == written
