"""Repository-level pytest set-up: the repo root on sys.path (configs/ is imported as a package)."""

import os

# Tests run on the CPU; multi-device tests set XLA_FLAGS themselves in their own processes.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
