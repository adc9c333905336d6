"""Runs the multi-device checks in tests/multidevice/ on 8 simulated CPU devices.

XLA_FLAGS must be set before JAX is imported and slows single-device code, so those checks run
in a separate pytest process (files named check_*.py, not collected by the default run).
"""

import os
import pathlib
import subprocess
import sys

MULTIDEVICE_DIR = pathlib.Path(__file__).parent / "multidevice"


def test_multidevice_checks_pass_on_eight_cpu_devices():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
  command += ["-o", "python_files=check_*.py", str(MULTIDEVICE_DIR)]
  result = subprocess.run(
    command, env=env, capture_output=True, text=True, cwd=MULTIDEVICE_DIR.parent.parent
  )
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
  assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
