"""Turning bench records (JSON lines) into a Markdown table, and comparing two runs."""

import json
import pathlib

_COLUMNS = (
  "method",
  "backbone",
  "batch",
  "crop x leads",
  "dtype",
  "devices",
  "compile s",
  "step ms (median, IQR)",
  "samples/s",
  "per device",
  "GFLOP/step",
  "MFU",
  "temp MB",
  "input samples/s",
  "limited by",
  "torch eager /s",
  "JAX/eager",
  "torch.compile /s",
  "JAX/compile",
  "weak scaling eff.",
)


def _num(value, fmt: str = "{:,.0f}") -> str:
  return "-" if value is None else fmt.format(value)


def _devices(record: dict) -> str:
  """The devices measured (or, when skipped, those a scaling run asked for), with the process count
  for the rows of the process series and of a multi-process job, e.g. ``4 (2 processes)``."""
  scaling = record.get("scaling") or {}
  devices = record.get("mesh_devices", scaling.get("devices", record["device_count"]))
  if "processes" in scaling:
    processes = scaling["processes"]
  elif not scaling and record.get("process_count", 1) > 1:
    processes = record["process_count"]
  else:
    return str(devices)
  return f"{devices} ({processes} process{'es' if processes > 1 else ''})"


def _row(record: dict) -> list[str]:
  case = record["case"]
  head = [
    case["method"],
    case["backbone"] + (f" ({case['teacher']} teacher)" if case.get("teacher") else ""),
    str(case["batch"]),
    f"{case['crop_len']} x {case['leads']}",
    case["dtype"],
    _devices(record),
  ]
  if record["status"] != "ok":
    return head + [f"skipped: {record.get('note', '')}"] + [""] * (len(_COLUMNS) - len(head) - 1)
  torch_ref = record.get("torch") or {}
  eager, compiled = torch_ref.get("eager") or {}, torch_ref.get("compile") or {}
  flops = record.get("flops_per_step")
  memory = record.get("memory") or {}
  temp = memory.get("temp_size_in_bytes")
  mfu = record.get("mfu")
  return head + [
    _num(record["compile_s"], "{:.1f}"),
    f"{record['step_ms']['median']:.1f} ({record['step_ms']['iqr']:.1f})",
    _num(record["samples_per_s"]),
    _num(record["samples_per_s_per_device"]),
    _num(None if flops is None else flops / 1e9, "{:.1f}"),
    _num(None if mfu is None else 100 * mfu, "{:.1f} %"),
    _num(None if temp is None else temp / 2**20, "{:.0f}"),
    _num(record.get("pipeline_samples_per_s")),
    record.get("limited_by") or "-",
    _num(eager.get("samples_per_s")),
    _num(eager.get("jax_ratio"), "{:.2f}"),
    _num(compiled.get("samples_per_s")),
    _num(compiled.get("jax_ratio"), "{:.2f}"),
    _num(record.get("weak_scaling_efficiency"), "{:.2f}"),
  ]


def markdown_table(records: list[dict]) -> str:
  """One row per record (skipped cases say why); ``-`` where a figure is not available."""
  lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
  lines += ["| " + " | ".join(_row(r)) + " |" for r in records]
  return "\n".join(lines) + "\n"


def read_records(path: str) -> list[dict]:
  text = pathlib.Path(path).read_text()
  records = []
  for number, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: not a JSON line ({error})") from error
  return records


def _key(record: dict) -> tuple:
  return (record["spec"], _devices(record))


# field -> how to read it from a record; ratios are B / A.
_COMPARED = {
  "samples/s": lambda r: r.get("samples_per_s"),
  "step ms": lambda r: (r.get("step_ms") or {}).get("median"),
  "compile s": lambda r: r.get("compile_s"),
  "temp MB": lambda r: ((r.get("memory") or {}).get("temp_size_in_bytes") or 0) / 2**20 or None,
  "peak MB": lambda r: ((r.get("memory") or {}).get("peak_bytes_in_use") or 0) / 2**20 or None,
}


def compare(path_a: str, path_b: str) -> str:
  """A Markdown table of B / A for the cases (spec and device count) both files measured."""
  a_records, b_records = read_records(path_a), read_records(path_b)
  a = {_key(r): r for r in a_records if r.get("status") == "ok"}
  b = {_key(r): r for r in b_records if r.get("status") == "ok"}
  common = [k for k in a if k in b]
  if not common:
    raise ValueError(f"{path_a} and {path_b} share no measured case")
  env = lambda r: f"{r['device_kind']} x{r['device_count']}, jax {r['jax']}"
  first_a, first_b = a[common[0]], b[common[0]]
  lines = [
    f"A: {path_a} ({env(first_a)})",
    f"B: {path_b} ({env(first_b)})",
    "",
    "| case | devices | " + " | ".join(f"{name} B/A" for name in _COMPARED) + " |",
    "|---|---|" + "---|" * len(_COMPARED),
  ]
  for key in common:
    ratios = []
    for read in _COMPARED.values():
      value_a, value_b = read(a[key]), read(b[key])
      ratios.append("-" if not value_a or value_b is None else f"{value_b / value_a:.2f}")
    lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(ratios) + " |")
  only = sorted({k[0] for k in a} ^ {k[0] for k in b})
  if only:
    lines += ["", "measured in only one file: " + ", ".join(only)]
  return "\n".join(lines) + "\n"
