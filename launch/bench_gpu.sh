#!/usr/bin/env bash
# The GPU comparison of issue 17: every backbone's teacher and lead-I steps, the MVKT steps and the
# net1d teacher case, in float32 and in bfloat16, JAX against PyTorch eager and torch.compile on
# this machine's GPU (configs/bench.py:accelerator). Installs nothing: it needs JAX's CUDA build
# and a CUDA build of torch already in the environment (docs/benchmarks.md).
#
#   launch/bench_gpu.sh [OUT_DIR] [bench flags...]    # OUT_DIR defaults to /tmp/lead_kt_bench_gpu
#   launch/bench_gpu.sh /tmp/b --config.cases="('teacher:xresnet1d101:128:250:12:bfloat16',)"
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir="${1:-/tmp/lead_kt_bench_gpu}"
shift || true
python="${PYTHON:-python}"

"$python" - <<'PY'
import sys

import jax

backend = jax.default_backend()
if backend != "gpu":
  sys.exit(
    f"bench_gpu.sh: JAX {jax.__version__} runs on {backend!r}, not a GPU. Install JAX's CUDA build "
    '(pip install -U "jax[cuda13]", or "jax[cuda12]" for a CUDA 12 driver) and check nvidia-smi.'
  )
try:
  import torch
except ImportError:
  sys.exit("bench_gpu.sh: torch is not installed; install a CUDA build of torch (pytorch.org).")
if not torch.cuda.is_available():
  sys.exit(
    f"bench_gpu.sh: torch {torch.__version__} sees no GPU. The project's torch==2.13.0 is a CPU "
    "build here: install a CUDA build of torch (pytorch.org's selector) for the PyTorch side."
  )
print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on "
      f"{torch.cuda.get_device_name()}")
PY

mkdir -p "$out_dir"
# JAX takes 75 % of the GPU's memory at start by default; the torch twins need theirs.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
"$python" -m lead_kt.bench --config=configs/bench.py:accelerator \
  --output="$out_dir/bench_gpu.jsonl" --markdown="$out_dir/bench_gpu.md" "$@"
echo "The table: $out_dir/bench_gpu.md (records: $out_dir/bench_gpu.jsonl)"
