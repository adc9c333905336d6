"""Cases of ``python -m lead_kt.bench`` (see docs/benchmarks.md).

A case is ``method:backbone:batch:crop_len:leads:dtype[:teacher]`` (global batch; the student's
first ``leads`` standard leads; float32 or bfloat16; the transfer methods' teacher when it is not
``backbone``). Choose others on the command line, e.g.
``--config.cases="('mvkt:xresnet1d101:32:1000:1:float32',)"``.
"""

import ml_collections

# Every classification backbone with a PyTorch twin (lead_kt.bench.torch_ref), each timed at the
# PTB-XL benchmark's 12-lead teacher shape and at the lead-I student's shape.
_BACKBONES = (
  "xresnet1d101",
  "xresnet1d50",
  "xresnet1d101_wide",
  "inception1d",
  "resnet1d_wang",
  "fcn_wang",
  "cnn_hannun",
  "resnet1d34",
  "reslstm_tse",
  "cnn_transformer",
)
# The MVKT step (1,024 negatives, lead-I student) of the deepest network and two smaller ones.
_MVKT_BACKBONES = ("xresnet1d101", "inception1d", "resnet1d_wang")
_DTYPES = ("float32", "bfloat16")
# A foundation model (ECGFounder's 12-lead Net1D, 10 s at 500 Hz) teaching a small student.
_NET1D_CASES = tuple(f"mvkt:fcn_wang:8:5000:1:{dtype}:net1d" for dtype in _DTYPES)
VARIANTS = ("", "quick", "accelerator", "twins")


def _twinned_cases(dtype: str) -> tuple[str, ...]:
  """Every backbone's teacher (128 x 250 x 12) and lead-I (32 x 1000 x 1) supervised step and the
  MVKT steps, in ``dtype``: the steps with a PyTorch twin."""
  return (
    *(f"teacher:{name}:128:250:12:{dtype}" for name in _BACKBONES),
    *(f"baseline:{name}:32:1000:1:{dtype}" for name in _BACKBONES),
    *(f"mvkt:{name}:32:1000:1:{dtype}" for name in _MVKT_BACKBONES),
  )


def get_config(variant: str = ""):
  """``configs/bench.py`` is the full list; ``configs/bench.py:quick`` runs every method once with
  small networks (minutes on a CPU), for a first look or a smoke test of a new machine;
  ``configs/bench.py:accelerator`` is the GPU comparison (``launch/bench_gpu.sh``): every twinned
  step in float32 and in bfloat16 against PyTorch eager and torch.compile on the same device;
  ``configs/bench.py:twins`` is the CPU table of docs/benchmarks.md: every twinned float32 step,
  no scaling series (about 20 minutes on 2 cores with cold caches)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown bench variant {variant!r}; known: {', '.join(VARIANTS[1:])}")
  c = ml_collections.ConfigDict()
  c.cases = (
    # Issue 17: every backbone's supervised step >= PyTorch eager; the xresnet1d101 teacher step
    # and the MVKT steps >= torch.compile.
    *_twinned_cases("float32"),
    "teacher:xresnet1d101:128:250:12:bfloat16",
    "feature_recon:cnn_transformer:64:250:1:float32",
    "signal_recon:xresnet1d50:16:1000:3:float32",
    *_NET1D_CASES,
  )
  c.output = "/tmp/lead_kt_bench.jsonl"
  c.num_classes = 5  # PTB-XL superdiagnostic
  c.num_train = 17_000  # memory-bank rows: PTB-XL's training split
  c.num_negatives = 1024  # MVKT's NCE negatives per anchor
  c.warmup_steps = 2
  c.timed_steps = 10
  # backbone -> constructor kwargs (e.g. tiny widths in tests); such cases get no PyTorch twin.
  c.backbone_kwargs = ml_collections.ConfigDict()
  # method -> ((dotted run-config field, value), ...), applied after the method's own config,
  # e.g. {"signal_recon": (("vae.channels", (32, 64, 128)),)}.
  c.method_overrides = ml_collections.ConfigDict()

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.enabled = True
  c.pipeline.seconds = 3.0
  c.pipeline.num_records = 1000
  c.pipeline.worker_count = 0

  c.torch = ml_collections.ConfigDict()
  c.torch.enabled = True  # skipped with a note when torch is not installed
  c.torch.compile = True
  c.torch.threads = 0  # 0 = PyTorch's default (the physical cores)
  # JAX and PyTorch take turns, timed_steps of each side in this many blocks, so that the
  # machine's drift falls on both sides.
  c.torch.rounds = 5

  # Weak scaling: this case's batch per device, on each device count (simulated on CPU).
  c.scaling = ml_collections.ConfigDict()
  c.scaling.case = "mvkt:resnet1d_wang:16:250:1:float32"
  c.scaling.device_counts = (1, 2, 4, 8)
  # The same case on each process count x devices_per_process devices: on CPU, real processes on
  # this machine joined by jax.distributed; in a multi-process job (--multiprocess=true, one
  # process per host on accelerators), any non-empty value measures that job as launched.
  c.scaling.process_counts = (1, 2, 4)
  c.scaling.devices_per_process = 1
  c.scaling.timeout_s = 600.0  # each scaling run (a subprocess, or a job of processes) at most
  if variant == "quick":
    c.cases = (
      "teacher:fcn_wang:64:250:12:float32",
      "baseline:fcn_wang:64:250:1:float32",
      "mvkt:fcn_wang:64:250:1:float32",
      "feature_recon:cnn_transformer:64:250:1:float32",
      "signal_recon:fcn_wang:16:1000:3:float32",
      "teacher:fcn_wang:64:250:12:bfloat16",
    )
    c.method_overrides = ml_collections.ConfigDict(
      {"signal_recon": (("vae.channels", (32, 64, 128)), ("vae.num_groups", 8))}
    )
    c.torch.enabled = False
    c.scaling.case = "mvkt:fcn_wang:16:250:1:float32"
    c.scaling.process_counts = (1, 2)
  if variant == "accelerator":
    c.cases = (*(case for dtype in _DTYPES for case in _twinned_cases(dtype)), *_NET1D_CASES)
    # Steps of a few milliseconds: more of them, for a stable median.
    c.warmup_steps = 5
    c.timed_steps = 50
    c.output = "/tmp/lead_kt_bench_gpu.jsonl"
    # One process on one host: the process series is a multi-host job's (docs/benchmarks.md).
    c.scaling.process_counts = ()
  if variant == "twins":
    c.cases = _twinned_cases("float32")
    c.output = "/tmp/lead_kt_bench_twins.jsonl"
    c.scaling.device_counts = ()
    c.scaling.process_counts = ()
  return c
