"""Cases of ``python -m lead_kt.bench`` (see docs/benchmarks.md).

A case is ``method:backbone:batch:crop_len:leads:dtype[:teacher]`` (global batch; the student's
first ``leads`` standard leads; float32 or bfloat16; the transfer methods' teacher when it is not
``backbone``). Choose others on the command line, e.g.
``--config.cases="('mvkt:xresnet1d101:32:1000:1:float32',)"``.
"""

import ml_collections

# Every registered classification backbone: its baseline step (1 lead, the PTB-XL benchmark's crop).
_BACKBONES = (
  "xresnet1d101",
  "xresnet1d50",
  "inception1d",
  "resnet1d_wang",
  "fcn_wang",
  "cnn_hannun",
  "resnet1d34",
  "reslstm_tse",
  "cnn_transformer",
)


def get_config(variant: str = ""):
  """``configs/bench.py`` is the full list; ``configs/bench.py:quick`` runs every method once with
  small networks (minutes on a CPU), for a first look or a smoke test of a new machine."""
  if variant not in ("", "quick"):
    raise ValueError(f"unknown bench variant {variant!r}; known: quick")
  c = ml_collections.ConfigDict()
  c.cases = (
    # The goals of issue 10: the 12-lead teacher step (vs torch.compile), the MVKT step (vs eager).
    "teacher:xresnet1d101:128:250:12:float32",
    "mvkt:xresnet1d101:32:1000:1:float32",
    "baseline:xresnet1d101:32:1000:1:float32",
    *(f"baseline:{name}:128:250:1:float32" for name in _BACKBONES),
    "teacher:xresnet1d101:128:250:12:bfloat16",
    "feature_recon:cnn_transformer:64:250:1:float32",
    "signal_recon:xresnet1d50:16:1000:3:float32",
    # A foundation model (ECGFounder's 12-lead Net1D, 10 s at 500 Hz) teaching a small student.
    *(f"mvkt:fcn_wang:8:5000:1:{dtype}:net1d" for dtype in ("float32", "bfloat16")),
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

  # Weak scaling: this case's batch per device, on each device count (simulated on CPU).
  c.scaling = ml_collections.ConfigDict()
  c.scaling.case = "mvkt:resnet1d_wang:16:250:1:float32"
  c.scaling.device_counts = (1, 2, 4, 8)
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
  return c
