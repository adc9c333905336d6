"""A trained PyTorch network (PTB-XL benchmark, MVKT code) as a finished lead_kt run directory.

python -m lead_kt.convert --from-torch FILE --backbone NAME --num-leads 12 \
    --class-names CD,HYP,MI,NORM,STTC --sampling-rate 100 --out DIR \
    (--mean M --std S | --scaler standard_scaler.pkl | --preprocessing ecgfounder)
    [--leads I,II,...] [--crop-len N] [--dataset NAME] [--head-seed N] [--backbone-kwargs JSON]

FILE is what `torch.save` wrote: a state_dict of one of `lead_kt.interop.LAYOUTS`, or a checkpoint
dict holding it under "model" or "state_dict" (read with `weights_only=True`: no code in it runs).
The input normalisation belongs to the model: one mean and std over all values (or 12, one per lead
in the order I, II, III, aVR, aVL, aVF, V1-V6), or the PTB-XL benchmark's `standard_scaler.pkl`
(a scikit-learn StandardScaler fitted on all values), read without scikit-learn by an unpickler
that builds nothing but the scaler's fields and numpy arrays. Or a contract of
`lead_kt.data.preprocessing` (`--preprocessing ecgfounder`: ECGFounder's filter and per-record
z-score at 500 Hz, 10 s windows by default), which the run records in its config: runs started
from it (`init_from`, `teacher.checkpoint`) and predict apply it.

The head must have one output per `--class-names`, unless `--head-seed` is given: then a head of
another size (ECGFounder's 150 classes) is replaced by a new one for these classes, drawn from the
seed as PyTorch's nn.Linear starts (fine-tune it: `init_from`). `--backbone-kwargs` holds the
backbone's options as JSON (e.g. a narrower net1d), recorded in the run's config.

DIR is written as a 12-lead teacher run (`--num-leads 12`) or, with fewer leads named by `--leads`,
as a baseline run, and serves `--config.teacher.checkpoint=DIR` (MVKT, KD, feature and signal
reconstruction: the student then normalises as the teacher does), `lead_kt.predict` and
`lead_kt.export`: `best/` (the variables), `normalization.json`, `run_identity.json` and
`results.json`, whose `converted_from` names the source file (path, SHA-256), the backbone and the
arguments. A converted run saw no validation split: its decision thresholds are 0.5 and it has no
scores. `--dataset` is the lead_kt dataset the model's records correspond to, for what predict
does to a record besides resampling (e.g. the icbeb2018 `_db6` filter); `--crop-len` its window
(default 2.5 s, the benchmark's). DIR is built beside itself and renamed into place at the end, so
it is complete or absent; an existing non-empty DIR is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from lead_kt import checkpoint, cli, compilation_cache, ecg_io, interop, methods, predict, train
from lead_kt.data.normalization import Normalizer, fit_normalizer
from lead_kt.interop import state_dicts

# A teacher's own thresholds come from validation; a converted run has none to choose them on.
THRESHOLD = 0.5
WINDOW_SECONDS = 2.5  # the PTB-XL benchmark's input size
DEFAULT_DATASET = "ptbxl/superdiagnostic_100hz"
# Where scikit-learn keeps StandardScaler: since 0.22, and before.
_SCALER_MODULES = ("sklearn.preprocessing._data", "sklearn.preprocessing.data")
# What numpy pickles arrays and scalars with (numpy.core before numpy 2, numpy._core after).
_NUMPY_HELPERS = {
  ("multiarray", "_reconstruct"),
  ("multiarray", "scalar"),
  ("numeric", "_frombuffer"),
}


class ConvertError(ValueError):
  """An input that cannot become a run directory; the message names the file and the cause."""


class _FittedScaler:
  """Stands in for scikit-learn's StandardScaler: unpickling fills in its fields (mean_, scale_,
  with_mean, with_std, ...)."""


class _ScalerUnpickler(pickle.Unpickler):
  """Builds a StandardScaler's fields and numpy arrays only; any other object is refused, so a
  scaler file cannot run code as a plain `pickle.load` would let it."""

  def find_class(self, module: str, name: str):
    if name == "StandardScaler" and module in _SCALER_MODULES:
      return _FittedScaler
    if module == "numpy" and name in ("ndarray", "dtype"):
      return getattr(np, name)
    package, _, submodule = module.rpartition(".")
    if package in ("numpy.core", "numpy._core") and (submodule, name) in _NUMPY_HELPERS:
      core = np._core if hasattr(np, "_core") else np.core
      return getattr(getattr(core, submodule), name)
    raise pickle.UnpicklingError(
      f"refused {module}.{name}: a scaler file may hold a scikit-learn StandardScaler and numpy "
      "arrays only"
    )


def read_scaler(path: str) -> Normalizer:
  """The Normalizer of a pickled scikit-learn StandardScaler (1 value: over all values, as the
  PTB-XL benchmark fits it; 12: one per lead). Raises ConvertError naming the file."""
  try:
    with open(path, "rb") as scaler_file:
      scaler = _ScalerUnpickler(scaler_file).load()
  except FileNotFoundError as error:
    raise ConvertError(f"{path}: no such scaler file") from error
  except Exception as error:  # pickle raises many kinds for files that are not pickles
    raise ConvertError(f"{path}: not a pickled StandardScaler ({error})") from error
  if not isinstance(scaler, _FittedScaler) or not hasattr(scaler, "mean_"):
    raise ConvertError(f"{path}: holds a {type(scaler).__name__}, not a fitted StandardScaler")
  fields = vars(scaler)
  # A scaler made with with_mean=False (with_std=False) does not subtract (divide by) what it fits.
  mean = np.ravel(fields["mean_"]) if fields.get("with_mean", True) else np.zeros(1)
  scale = fields.get("scale_")
  std = np.ravel(scale) if fields.get("with_std", True) and scale is not None else np.ones(1)
  return _normalizer(mean, std, path)


def _normalizer(mean, std, source: str) -> Normalizer:
  mean = np.ravel(mean)
  kind = "global" if mean.size == 1 else "per_lead"
  try:
    return Normalizer.from_dict(
      {"kind": kind, "mean": mean.tolist(), "std": np.ravel(std).tolist()}
    )
  except ValueError as error:
    raise ConvertError(f"{source}: {error}") from error


def read_state_dict(path: str) -> Mapping:
  """What torch.save wrote to `path`, read on the CPU with weights_only=True."""
  if not os.path.isfile(path):
    raise ConvertError(f"{path}: no such file")
  try:
    import torch  # An extra (lead_kt[torch]): only reading PyTorch files needs it.
  except ImportError as error:
    raise ConvertError(f"{path}: reading a PyTorch checkpoint needs torch ({error})") from error
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
    raise ConvertError(
      f"{path}: torch.load(weights_only=True) cannot read it ({type(error).__name__}: {error})"
    ) from error
  if not isinstance(loaded, Mapping):
    raise ConvertError(f"{path}: holds a {type(loaded).__name__}, not a state_dict")
  return loaded


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as source:
    for block in iter(lambda: source.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def run_config(
  backbone: str,
  leads: Sequence[str],
  dataset: str,
  crop_len: int,
  normalization: str,
  preprocessing: str = "",
  backbone_kwargs: Mapping | None = None,
):
  """The config of the run that would have trained this network in lead_kt (no epochs ran)."""
  import ml_collections

  from configs import default, teacher

  is_teacher = tuple(leads) == ecg_io.STANDARD_LEADS
  config = (teacher if is_teacher else default).get_config()
  config.student.backbone = config.teacher.backbone = backbone
  config.student.kwargs = ml_collections.ConfigDict(dict(backbone_kwargs or {}))
  config.teacher.kwargs = ml_collections.ConfigDict(dict(backbone_kwargs or {}))
  config.data.preprocessing = preprocessing
  if not is_teacher:
    config.data.student_leads = tuple(leads)
  config.data.name = dataset
  config.data.crop_len = crop_len
  config.data.normalization = normalization
  config.num_epochs = 0
  return config


def _leads(num_leads: int, leads: Sequence[str] | None) -> tuple[str, ...]:
  if leads is None:
    if num_leads != len(ecg_io.STANDARD_LEADS):
      raise ConvertError(f"a {num_leads}-lead model needs --leads naming its input leads in order")
    return ecg_io.STANDARD_LEADS
  try:
    names = tuple(ecg_io.normalize_lead_name(lead) for lead in leads)
  except ecg_io.EcgReadError as error:
    raise ConvertError(f"--leads: {error}") from error
  if len(names) != num_leads or len(set(names)) != len(names):
    raise ConvertError(f"--leads must name {num_leads} different leads, got {', '.join(leads)}")
  if len(names) == len(ecg_io.STANDARD_LEADS) and names != ecg_io.STANDARD_LEADS:
    raise ConvertError(
      f"a 12-lead model reads them in the order {', '.join(ecg_io.STANDARD_LEADS)}"
    )
  return names


def _check_dataset(dataset: str, sampling_rate: float) -> None:
  """`dataset` names one of lead_kt's dataset builders at the model's rate (read from its code)."""
  import ml_collections

  builder = predict._dataset_builder(ml_collections.ConfigDict({"data": {"name": dataset}}))
  fs = getattr(getattr(builder, "builder_config", None), "sampling_rate", None)
  if fs is None:
    raise ConvertError(
      f"--dataset {dataset} is not a dataset of lead_kt's builders (e.g. {DEFAULT_DATASET}, "
      "icbeb2018/500hz)"
    )
  if fs != sampling_rate:
    raise ConvertError(
      f"--dataset {dataset} is sampled at {fs:g} Hz but --sampling-rate is {sampling_rate:g}: "
      "name the dataset at the model's rate"
    )


def convert(
  source: str,
  out_dir: str,
  backbone: str,
  class_names: Sequence[str],
  sampling_rate: float,
  normalizer: Normalizer,
  normalization_source: dict,
  num_leads: int = 12,
  leads: Sequence[str] | None = None,
  crop_len: int | None = None,
  dataset: str = DEFAULT_DATASET,
  arguments: Sequence[str] = (),
  head_seed: int | None = None,
  preprocessing: str = "",
  backbone_kwargs: Mapping | None = None,
) -> dict:
  """Writes the run directory `out_dir` of the PyTorch checkpoint `source`; returns its results.
  `normalization_source` says where the normalizer came from (recorded in converted_from);
  `head_seed`: a new head for `class_names` when the checkpoint's has another size;
  `preprocessing`: the contract the network's inputs follow (its normalizer is then "none").
  Raises ConvertError (a bad input, named with its cause) or CliError (an `out_dir` that is not
  new or empty, or cannot be written) before anything is written."""
  with cli.output_directory(out_dir) as partial:
    if backbone not in interop.LAYOUTS:
      raise ConvertError(
        f"no PyTorch layout for --backbone {backbone}; supported: {', '.join(interop.LAYOUTS)}"
      )
    input_leads = _leads(num_leads, leads)
    class_names = list(class_names)
    if not class_names or len(set(class_names)) != len(class_names):
      raise ConvertError(f"--class-names must name distinct classes, got {','.join(class_names)}")
    if crop_len is not None and crop_len < 1:
      raise ConvertError(f"--crop-len must be a positive number of samples, got {crop_len}")
    window_seconds = WINDOW_SECONDS
    if preprocessing:
      contract = _contract(preprocessing, sampling_rate)
      window_seconds = contract.record_seconds
    crop_len = crop_len or round(window_seconds * sampling_rate)
    _check_dataset(dataset, sampling_rate)
    state_dict = read_state_dict(source)
    try:
      layers = state_dicts.layout(backbone, backbone_kwargs)
    except TypeError as error:  # an option the backbone does not have
      raise ConvertError(f"--backbone-kwargs: {error}") from error
    head = [layer for layer in layers if layer.kind == "linear"][-1]
    head_bias = state_dicts._unwrap(state_dict).get(f"{head.torch_prefixes[0]}.bias")
    head_size = None if head_bias is None else tuple(head_bias.shape)[0]
    new_head = head_size is not None and head_size != len(class_names)
    if new_head and head_seed is None:
      raise ConvertError(
        f"{source}: the {backbone} head has {head_size} outputs but --class-names names "
        f"{len(class_names)} classes (give --head-seed to start a new head for them)"
      )
    try:
      variables = interop.from_torch(
        backbone,
        state_dict,
        len(class_names),
        num_leads,
        head_rng=head_seed if new_head else None,
        model_kwargs=backbone_kwargs,
      )
    except interop.StateDictError as error:
      raise ConvertError(f"{source}: {error}") from error

    config = run_config(
      backbone, input_leads, dataset, crop_len, normalizer.kind, preprocessing, backbone_kwargs
    )
    methods.validate(config)
    source = os.path.abspath(source)
    results = {
      "method": config.method,
      "dataset": dataset,
      "backbone": backbone,
      "teacher_backbone": None,
      "student_leads": list(input_leads),
      "class_names": class_names,
      # No split of a lead_kt dataset was used: the network was trained elsewhere.
      "split_sizes": {"train": 0, "validation": 0, "test": 0},
      "sampling_rate": float(sampling_rate),
      "crop_len": crop_len,
      "eval_stride": max(crop_len // 2, 1),
      "best_epoch": 0,
      "history": [],
      "validation": {},
      "test": {"thresholds": dict.fromkeys(class_names, THRESHOLD)},
      "converted_from": {
        "file": source,
        "sha256": file_sha256(source),
        "backbone": backbone,
        "normalization": normalization_source,
        "thresholds": f"{THRESHOLD} for every class (no validation split to choose them on)",
        "head": f"new for {len(class_names)} classes (seed {head_seed}), the file's has {head_size}"
        if new_head
        else "the file's",
        "arguments": list(arguments),
      },
      "config": json.loads(config.to_json_best_effort()),
    }
    ckpts = checkpoint.RunCheckpoints(str(partial), keep_latest=1, async_save=False)
    # A network without BatchNorm (ECGFounder's Net1D) has no batch statistics.
    stats = {"batch_stats": variables.get("batch_stats", {})}
    ckpts.save_best(0, {"params": variables["params"], "method_state": stats})
    ckpts.close()
    (partial / "checkpoints").rmdir()  # made empty by RunCheckpoints: nothing here resumes
    (partial / "normalization.json").write_text(json.dumps(normalizer.to_dict(), indent=2))
    identity = train._identity(config, len(class_names))
    (partial / "run_identity.json").write_text(json.dumps(identity, indent=2))
    (partial / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _contract(name: str, sampling_rate: float):
  """The contract `name` of lead_kt.data.preprocessing, at the model's rate."""
  from lead_kt.data import preprocessing

  try:
    contract = preprocessing.get(name)
  except ValueError as error:
    raise ConvertError(f"--preprocessing: {error}") from error
  if contract.fs != sampling_rate:
    raise ConvertError(
      f"--preprocessing {name} is defined at {contract.fs} Hz but --sampling-rate is "
      f"{sampling_rate:g}"
    )
  return contract


def _json_object(text: str) -> dict:
  value = json.loads(text)
  if not isinstance(value, dict):
    raise argparse.ArgumentTypeError(f"expected a JSON object, got {text}")
  return value


def _numbers(text: str) -> list[float]:
  return [float(value) for value in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.ArgumentParser(prog="python -m lead_kt.convert", description=__doc__.split("\n")[0])
  parser.add_argument("--from-torch", required=True, metavar="FILE", help="torch.save'd state_dict")
  parser.add_argument("--backbone", required=True, help=f"one of {', '.join(interop.LAYOUTS)}")
  parser.add_argument("--num-leads", type=int, default=12, help="input leads of the network")
  parser.add_argument("--leads", help="comma-separated input leads, in order (fewer than 12)")
  parser.add_argument("--class-names", required=True, help="comma-separated, in the head's order")
  parser.add_argument("--sampling-rate", type=float, required=True, help="Hz")
  parser.add_argument("--out", required=True, help="the run directory to write (new or empty)")
  parser.add_argument("--mean", type=_numbers, help="1 value, or 12 (one per lead)")
  parser.add_argument("--std", type=_numbers, help="1 value, or 12 (one per lead)")
  parser.add_argument("--scaler", help="a pickled scikit-learn StandardScaler (PTB-XL benchmark)")
  parser.add_argument("--crop-len", type=int, help="window in samples (default: 2.5 s)")
  parser.add_argument("--dataset", default=DEFAULT_DATASET, help="the lead_kt dataset it fits")
  parser.add_argument(
    "--preprocessing", default="", help="the inputs' contract (ecgfounder), instead of --mean/--std"
  )
  parser.add_argument(
    "--head-seed", type=int, help="a new head for --class-names when the file's has another size"
  )
  parser.add_argument(
    "--backbone-kwargs", type=_json_object, help='backbone options as JSON, e.g. {"blocks": [1]}'
  )
  args = parser.parse_args(argv)
  given = [args.scaler is not None, args.mean is not None or args.std is not None]
  if args.preprocessing and any(given):
    parser.error("--preprocessing standardises each record: no --mean/--std or --scaler")
  if not args.preprocessing and args.scaler is None and (args.mean is None or args.std is None):
    parser.error("give the input normalisation: --mean and --std, --scaler, or --preprocessing")
  if all(given):
    parser.error("--scaler and --mean/--std exclude each other")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save step at INFO.
  compilation_cache.enable()
  try:
    if args.preprocessing:
      normalizer = fit_normalizer((), "none")  # the identity: the contract standardises
      origin = {"preprocessing": args.preprocessing}
    elif args.scaler is not None:
      normalizer = read_scaler(args.scaler)
      origin = {"scaler": os.path.abspath(args.scaler), "sha256": file_sha256(args.scaler)}
    else:
      normalizer = _normalizer(args.mean, args.std, "--mean/--std")
      origin = {"mean": args.mean, "std": args.std}
    convert(
      args.from_torch,
      args.out,
      args.backbone,
      args.class_names.split(","),
      args.sampling_rate,
      normalizer,
      origin,
      num_leads=args.num_leads,
      leads=args.leads.split(",") if args.leads else None,
      crop_len=args.crop_len,
      dataset=args.dataset,
      arguments=sys.argv[1:] if argv is None else argv,
      head_seed=args.head_seed,
      preprocessing=args.preprocessing,
      backbone_kwargs=args.backbone_kwargs,
    )
  except (ConvertError, cli.CliError) as error:
    return cli.report(error)
  print(os.path.abspath(args.out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
