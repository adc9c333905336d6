"""Repository-level pytest set-up: the repo root on sys.path (configs/ is imported as a package)."""

import os

# Tests run on the CPU; multi-device tests set XLA_FLAGS themselves in their own processes.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The commands' persistent compilation cache stays out of the user's cache directory during tests
# (JAX_COMPILATION_CACHE_DIR, when set, still applies).
os.environ.setdefault("LEAD_KT_COMPILATION_CACHE", "off")
