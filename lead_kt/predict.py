"""Predictions of a trained run on ECG recordings from disk.

python -m lead_kt.predict --workdir=RUN --input PATH [PATH ...] [--output out.csv|out.json]
    [--csv-fs HZ] [--lead LEAD | --lead-map LABEL=LEAD,...] [--segment-seconds S]

RUN is a finished run directory (a transfer method's top directory or its `student/` both work).
PATH is a record (WFDB `.hea` + signal file, Challenge `.hea` + `.mat`, CPSC2018 `.mat`, `.csv`,
`.edf`/`.bdf`; see `lead_kt.ecg_io`) or a directory searched for records. Without --output the
table goes to stdout as CSV; --output is checked before any work and written whole (a temporary
file renamed), never half. A record that cannot be used gets no prediction: its row carries the
reason in `error`, the message goes to stderr and the exit status is 1.

Channels are read as the leads their labels name (any spelling: `Lead 1`, `ECG II`, `MLII`);
`--lead I` says that each record's one channel is lead I (a wearable's `ECG` or `value` column, a
headerless one-column CSV file), `--lead-map ECG=I,chan2=II` names channels by their labels. Other
channels (Resp, SpO2, ...) are not read and are listed in `ignored_channels`.

Each record goes through the trainer's own evaluation path: the leads the model reads are picked by
name, treated as the run's dataset builder treated its records (resampled to the run's rate,
polyphase; for an icbeb2018 `_db6` dataset denoised before, at 500 Hz, and for a `_20s` one
centre-cropped or tiled to 20 s after, with the builder's own functions; for a run with a
`data.preprocessing` contract, that contract after resampling), normalised with the run's statistics
(`normalization.json`), cut into the run's test-time windows (crop_len, stride, and a last window
aligned to the record's end) and the windows' probabilities aggregated as in evaluation (max or
mean: the `aggregation` column); the yes/no decisions use the per-class thresholds chosen on the
validation split (results.json, test.thresholds). On a PTB-XL record the probabilities equal the
trainer's for that record, and an ICBEB2018 record's prepared input equals what the builder stores
for it (tests/test_predict.py).

Those thresholds were chosen on the run's training records (10 s for PTB-XL): the max over the many
windows of a much longer recording is at least that of each of its parts, for every class, so it can
cross several classes' thresholds at once. Such a record gets a `LongRecordWarning` (stderr) when it
is more than LONG_RECORD_FACTOR times as long (datasets whose records vary in length give no such
warning). `--segment-seconds S` predicts every S seconds of a record apart instead: one row per
segment (`segment`, `start_s`, `end_s`), each aggregated over its own windows; the last segment ends
at the record's end (it overlaps the one before), so each is S seconds long.

Refused with `ecg_io.EcgReadError` (or a subclass) and a message naming the file: unreadable or
invalid records (see ecg_io), NaN/Inf samples, leads the model needs that the record lacks (all
named), a flat lead among those, an implausible sampling rate, and a record shorter than half a
window. A record shorter than a window but at least half of one is padded as the pipeline pads (the
padding is 0 after normalisation) and a `ShortRecordWarning` says so. Run directories that are
unfinished, from an incompatible run or with corrupt checkpoints raise `RunDirError`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lead_kt import checkpoint, compilation_cache, ecg_io, methods
from lead_kt.data.normalization import Normalizer
from lead_kt.data.windows import aggregate_windows, sliding_windows

# Sampling rates outside this range (Hz) are header errors, not ECG recorders.
PLAUSIBLE_FS = (25.0, 20_000.0)
# A record shorter than this fraction of a window is refused (mostly padding, no real evidence).
MIN_WINDOW_FRACTION = 0.5
# A span this many times longer than the training records is warned about (LongRecordWarning).
LONG_RECORD_FACTOR = 2.0
_SMALLEST_BATCH = 8


class RunDirError(ecg_io.EcgReadError, checkpoint.CheckpointError):
  """A run directory that cannot serve predictions (unfinished, incompatible or corrupt)."""


class ShortRecordError(ecg_io.EcgReadError):
  """A record shorter than MIN_WINDOW_FRACTION of the model's window."""


class RecordWarning(UserWarning):
  """Something about a record that its prediction should be read with (the CLI prints it)."""


class ShortRecordWarning(RecordWarning):
  """A record shorter than one window, zero-padded (after normalisation) as in evaluation."""


class LongRecordWarning(RecordWarning):
  """One prediction aggregated over a span much longer than the run's training records, whose
  thresholds do not fit it (ModelSpec.record_seconds)."""


@dataclasses.dataclass(frozen=True)
class RecordPreprocessing:
  """What the run's dataset builder did to every record besides resampling, so that predict repeats
  it. denoise_fs: the rate (Hz) at which the record was wavelet-denoised before resampling (the
  icbeb2018 `_db6` configs), None for no filter; record_length: the samples at the model's rate
  to which the record was centre-cropped or tiled after resampling (`_20s`), None to keep its
  length; contract: the run's `data.preprocessing` (lead_kt.data.preprocessing), applied at the
  model's rate to the leads the model reads, "" for none."""

  denoise_fs: float | None = None
  record_length: int | None = None
  contract: str = ""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The input contract of a trained run.

  input_leads: the leads the network reads, in the order of the input's last axis.
  student_leads: the run's student leads (a subset of input_leads except for signal_recon).
  fs: the model's sampling rate (Hz); crop_len, stride: window length and step in samples;
  aggregate: "max" or "mean" over a record's windows; thresholds: float [C], per class, chosen on
  validation; mean, inv_std: float32 [len(input_leads)], the run's normalisation for those leads;
  preprocessing: what the dataset builder did to each record (filter, fixed length);
  record_seconds: the length of the run's training records, None when they vary.
  """

  method: str
  class_names: tuple[str, ...]
  input_leads: tuple[str, ...]
  student_leads: tuple[str, ...]
  fs: float
  crop_len: int
  stride: int
  aggregate: str
  thresholds: np.ndarray
  mean: np.ndarray
  inv_std: np.ndarray
  preprocessing: RecordPreprocessing
  record_seconds: float | None


@dataclasses.dataclass(frozen=True)
class Segments:
  """A record's test-time windows, grouped into the spans whose outputs are aggregated.

  windows: float32 [N, crop_len, L_in] in mV at the model's rate; segment: int64 [N], the span of
  each window; bounds: int64 [S, 2], each span's first sample and end at the model's rate.
  """

  windows: np.ndarray
  segment: np.ndarray
  bounds: np.ndarray


def resolve_run_dir(workdir: str | os.PathLike) -> str:
  """The directory holding the model: `workdir`, or `workdir/student` for a transfer method's top
  directory (which holds the summary but no checkpoint of its own)."""
  workdir = os.fspath(workdir)
  student = os.path.join(workdir, "student")
  if not os.path.isdir(os.path.join(workdir, "best")) and os.path.isfile(
    os.path.join(student, "results.json")
  ):
    return student
  return workdir


def model_input_leads(config: ml_collections.ConfigDict, student_leads: Sequence[str]):
  """The leads the run's network reads: all twelve for a teacher run, the kept leads for
  signal_recon (its VAE reads the 12-lead array with the others zeroed), else the student's."""
  if config.method == "teacher":
    return ecg_io.STANDARD_LEADS
  if config.method == "signal_recon":
    from lead_kt.methods.signal_recon import kept_lead_indices

    return tuple(ecg_io.STANDARD_LEADS[i] for i in kept_lead_indices(config.kept_leads))
  return tuple(ecg_io.normalize_lead_name(name) for name in student_leads)


class Predictor:
  """A trained run, ready to predict on recordings.

  Loads results.json, normalization.json and the best checkpoint of `workdir` once; the network is
  compiled for batches of `batch_size` windows (longer records take several batches).
  """

  def __init__(self, workdir: str | os.PathLike, batch_size: int = 64):
    self.run_dir = resolve_run_dir(workdir)
    self.batch_size = batch_size
    results = _read_json(self.run_dir, "results.json")
    normalizer = self._normalizer()
    try:
      self.config = ml_collections.ConfigDict(results["config"])
      num_classes = len(results["class_names"])
      num_train = int(results["split_sizes"]["train"])
      # Labels for picking negatives matter to the training loss only: any of the right length do.
      first_labels = np.zeros(num_train, np.int32)
      self.method = methods.create(self.config, num_classes, num_train, first_labels)
      self.spec = _model_spec(self.config, results, normalizer)
    except (KeyError, TypeError, ValueError) as error:
      raise RunDirError(
        f"{self.run_dir}: results.json does not describe a usable run ({error!r})"
      ) from error
    self.params, self.state = self._restore()
    # The network on device batches: (params, state, windows [B, crop_len, L_in]) -> logits [B, C].
    self.jitted_logits = jax.jit(functools.partial(window_logits, self.method, self.spec))

  def predict_signal(
    self, signal: np.ndarray, lead_names: Sequence[str], fs: float, name: str = "signal"
  ) -> np.ndarray:
    """Class probabilities float64 [C] of one recording: signal [T, L] in mV, its L lead names
    (any spelling, any order; leads the model does not read are ignored), fs in Hz. `name` is
    what error messages call the recording."""
    signal = np.asarray(signal, np.float32)
    if signal.ndim != 2 or signal.shape[1] != len(lead_names):
      raise ecg_io.EcgReadError(
        f"{name}: signal shape {signal.shape} does not match {len(lead_names)} lead names"
      )
    leads = tuple(ecg_io.normalize_lead_name(lead) for lead in lead_names)
    record = ecg_io.make_record(signal, leads, float(fs), name, {})
    return self.segment_probabilities(self.segments(record))[0]

  def predict_record(
    self,
    path: str | os.PathLike,
    csv_fs: float | None = None,
    naming: ecg_io.LeadNaming | None = None,
  ) -> dict[str, Any]:
    """Reads and predicts one record as a whole; see predict_segments for what it returns."""
    (result,) = self.predict_segments(path, csv_fs, naming)
    return result

  def predict_segments(
    self,
    path: str | os.PathLike,
    csv_fs: float | None = None,
    naming: ecg_io.LeadNaming | None = None,
    segment_seconds: float | None = None,
  ) -> list[dict[str, Any]]:
    """Reads one record and predicts each `segment_seconds` of it apart (None: the whole record as
    one segment). One dict per segment: `file`, `segment` (0, 1, ...), `start_s`, `end_s` (at the
    model's rate), `aggregation` (of the segment's windows: max or mean), `leads` (those used),
    `ignored_channels` (the record's channels not read as leads), `fs_in`, `fs_out`,
    `num_windows`, `probabilities` {class: float} and `decisions` {class: bool}."""
    record = ecg_io.read_record(path, csv_fs=csv_fs, naming=naming)
    segments = self.segments(record, segment_seconds)
    spec = self.spec
    results = []
    for index, probs in enumerate(self.segment_probabilities(segments)):
      start, end = segments.bounds[index] / spec.fs
      results.append(
        {
          "file": os.fspath(path),
          "segment": index,
          "start_s": float(start),
          "end_s": float(end),
          "aggregation": spec.aggregate,
          "leads": list(spec.input_leads),
          "ignored_channels": list(record.meta.get("ignored_channels", ())),
          "fs_in": record.fs,
          "fs_out": spec.fs,
          "num_windows": int(np.sum(segments.segment == index)),
          "probabilities": dict(zip(spec.class_names, probs.tolist(), strict=True)),
          "decisions": {
            name: bool(p >= t)
            for name, p, t in zip(spec.class_names, probs, spec.thresholds, strict=True)
          },
        }
      )
    return results

  def model_windows(self, record: ecg_io.Record) -> np.ndarray:
    """The record's test-time windows as the model takes them: float32 [N, crop_len, L_in] in mV
    at the model's rate, preprocessed as the run's dataset (a short record padded with the
    normalisation mean, i.e. 0 once normalised)."""
    return self.segments(record).windows

  def segments(self, record: ecg_io.Record, segment_seconds: float | None = None) -> Segments:
    """The record's windows (see model_windows), grouped into segments of `segment_seconds` (at
    least one window long) that start every `segment_seconds`, the last one ending at the record's
    end; None, or a record not longer than one segment: the whole record as one segment."""
    spec = self.spec
    signal = ecg_io.select_leads(record, spec.input_leads, needed_by="the model")
    ecg_io.reject_flat_leads(signal, spec.input_leads, record.path)
    if not PLAUSIBLE_FS[0] <= record.fs <= PLAUSIBLE_FS[1]:
      raise ecg_io.EcgReadError(
        f"{record.path}: implausible sampling rate {record.fs:g} Hz (expected "
        f"{PLAUSIBLE_FS[0]:g} to {PLAUSIBLE_FS[1]:g} Hz)"
      )
    signal = preprocess_as_dataset(signal, record.fs, spec)
    length = len(signal)
    if length < MIN_WINDOW_FRACTION * spec.crop_len:
      raise ShortRecordError(
        f"{record.path}: {length} samples at {spec.fs:g} Hz ({length / spec.fs:.2f} s) is shorter "
        f"than half the model's window of {spec.crop_len} samples ({spec.crop_len / spec.fs:.2f} s)"
      )
    if length < spec.crop_len:
      warnings.warn(
        f"{record.path}: {length} samples at {spec.fs:g} Hz, shorter than the model's window of "
        f"{spec.crop_len}; padded as in evaluation",
        ShortRecordWarning,
        stacklevel=3,
      )
      padding = np.broadcast_to(spec.mean, (spec.crop_len - length, len(spec.mean)))
      signal = np.concatenate([signal, padding]).astype(np.float32)
    span = length if segment_seconds is None else self.segment_length(segment_seconds)
    # Segments are laid out as windows are: every `span` samples, the last one ending at the end.
    _, starts = sliding_windows(np.array([length]), span, span)
    ends = np.minimum(starts + span, length)
    self._warn_if_long(record.path, ends - starts)
    segment, window_starts = sliding_windows(ends - starts, spec.crop_len, spec.stride)
    window_starts = window_starts + starts[segment]
    windows = np.stack([signal[start : start + spec.crop_len] for start in window_starts])
    return Segments(windows, segment, np.stack([starts, ends], axis=1))

  def segment_length(self, segment_seconds: float) -> int:
    """Samples at the model's rate of a segment of `segment_seconds`; ValueError when it is
    shorter than the model's window."""
    spec = self.spec
    span = round(segment_seconds * spec.fs)
    if span < spec.crop_len:
      raise ValueError(
        f"segments of {segment_seconds:g} s are shorter than the model's window of "
        f"{spec.crop_len / spec.fs:g} s"
      )
    return span

  def segment_probabilities(self, segments: Segments) -> np.ndarray:
    """Class probabilities [S, C] of each segment: its windows' aggregated as in evaluation."""
    # Sigmoid in float64 on the host, then aggregation: exactly as the trainer's evaluation.
    probs = 1.0 / (1.0 + np.exp(-self.window_logits(segments.windows).astype(np.float64)))
    return aggregate_windows(
      probs, segments.segment, np.ones(len(probs)), len(segments.bounds), self.spec.aggregate
    )

  def window_logits(self, windows: np.ndarray) -> np.ndarray:
    """float32 [N, C] logits of windows [N, crop_len, L_in] (mV), in batches of at most
    batch_size, each padded to a power of two (few compiled shapes, little wasted work)."""
    chunks = []
    for first in range(0, len(windows), self.batch_size):
      chunk = windows[first : first + self.batch_size]
      size = min(self.batch_size, max(_SMALLEST_BATCH, 1 << (len(chunk) - 1).bit_length()))
      padded = np.zeros((size, *chunk.shape[1:]), np.float32)
      padded[: len(chunk)] = chunk
      chunks.append(np.asarray(self.jitted_logits(self.params, self.state, padded))[: len(chunk)])
    return np.concatenate(chunks)

  def _warn_if_long(self, path: str, spans: np.ndarray) -> None:
    """A LongRecordWarning when a span (samples) exceeds LONG_RECORD_FACTOR training records."""
    spec = self.spec
    seconds = spans.max() / spec.fs
    if spec.record_seconds and seconds > LONG_RECORD_FACTOR * spec.record_seconds:
      warnings.warn(
        f"{path}: {seconds:g} s aggregated into one prediction ({spec.aggregate} over its "
        f"windows), much longer than the {spec.record_seconds:g} s records the model's thresholds "
        f"were chosen on, which it may exceed for several classes at once; --segment-seconds "
        f"{spec.record_seconds:g} predicts each {spec.record_seconds:g} s apart",
        LongRecordWarning,
        stacklevel=4,
      )

  def _normalizer(self) -> Normalizer:
    values = _read_json(self.run_dir, "normalization.json")
    try:
      return Normalizer.from_dict(values)
    except (KeyError, TypeError, ValueError) as error:
      raise RunDirError(f"{self.run_dir}/normalization.json: invalid ({error})") from error

  def _restore(self):
    """The best checkpoint's params and method state, on the first device."""
    spec = self.spec
    batch = _example_batch(spec, len(spec.class_names), int(self.config.batch_size))
    abstract = jax.eval_shape(self.method.init, jax.random.PRNGKey(0), batch)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract
    )
    target = {"params": abstract[0], "method_state": abstract[1]}
    try:
      restored = checkpoint.load_best_model(self.run_dir, target)
    except Exception as error:  # Orbax and tensorstore raise many kinds for damaged files.
      raise RunDirError(
        f"{self.run_dir}: cannot load the best checkpoint into the {self.config.method} / "
        f"{self.config.student.backbone} network that results.json describes: {error}"
      ) from error
    return restored["params"], restored["method_state"]


def preprocess_as_dataset(signal: np.ndarray, fs: float, spec: ModelSpec) -> np.ndarray:
  """signal float32 [T, L] in mV at fs Hz -> float32 [T', L] at the model's rate, treated as the
  run's dataset builder treated each record (data_builders/icbeb2018), in the builder's order:
  the wavelet filter before resampling, the centre crop or tiling after. Only resampling for
  datasets without these options. Then the run's contract (`data.preprocessing`), as the pipeline
  applies it to each stored record."""
  from data_builders.icbeb2018 import preprocessing
  from lead_kt.data import preprocessing as contracts

  steps = spec.preprocessing
  if steps.denoise_fs:
    # The filter's bands are set for the builder's source rate, so it runs at that rate.
    signal = preprocessing.wavelet_denoise(ecg_io.resample(signal, fs, steps.denoise_fs))
    fs = steps.denoise_fs
  signal = ecg_io.resample(signal, fs, spec.fs)
  if steps.record_length:
    signal = preprocessing.centre_crop_or_tile(signal, steps.record_length)
  if steps.contract:
    signal = contracts.get(steps.contract).apply(signal, spec.fs)
  return signal


def window_logits(method, spec: ModelSpec, params, state, windows: jax.Array) -> jax.Array:
  """The run's network on raw windows: float32 [B, crop_len, L_in] in mV -> logits [B, C].

  Normalises with the run's statistics, puts the input leads into their places of the 12-lead
  `teacher` view (other leads 0) and cuts the `student` view from it, as the pipeline does.
  """
  x = (windows.astype(jnp.float32) - spec.mean) * spec.inv_std
  # Each of the 12 columns takes its input lead, or the appended zero column (a static gather).
  with_zeros = jnp.concatenate([x, jnp.zeros_like(x[..., :1])], axis=-1)
  source = [
    spec.input_leads.index(lead) if lead in spec.input_leads else len(spec.input_leads)
    for lead in ecg_io.STANDARD_LEADS
  ]
  teacher = with_zeros[..., np.array(source)]
  student_columns = np.array([ecg_io.STANDARD_LEADS.index(lead) for lead in spec.student_leads])
  batch = {
    "teacher": teacher,
    "student": teacher[..., student_columns],
    "label": jnp.zeros((x.shape[0], len(spec.class_names)), jnp.float32),
    "index": jnp.zeros(x.shape[:1], jnp.int32),
    "mask": jnp.ones(x.shape[:1], jnp.float32),
  }
  return method.predict(params, state, batch)["logits"].astype(jnp.float32)


def _model_spec(config, results: dict, normalizer: Normalizer) -> ModelSpec:
  class_names = tuple(results["class_names"])
  student_leads = tuple(ecg_io.normalize_lead_name(name) for name in results["student_leads"])
  input_leads = model_input_leads(config, student_leads)
  thresholds = results["test"].get("thresholds")
  if not isinstance(thresholds, dict) or set(thresholds) != set(class_names):
    raise ValueError("test.thresholds (per class, chosen on validation) are missing")
  dataset_rate, record_length = _dataset_facts(config)
  crop_len = (
    int(config.data.crop_len)
    or int(results.get("crop_len", 0))
    or record_length
    or _dataset_crop_len(config)
  )
  columns = [ecg_io.STANDARD_LEADS.index(lead) for lead in input_leads]
  contract = config.data.get("preprocessing", "")
  if contract and tuple(input_leads) != tuple(ecg_io.STANDARD_LEADS):
    # The pipeline z-scores each stored 12-lead record as a whole; a view of fewer leads cannot
    # be given the same statistics from its own leads.
    raise ValueError(
      f"the run reads {', '.join(input_leads)}, but its data.preprocessing={contract!r} "
      "z-scores the whole 12-lead record: predict supports such runs only for 12-lead models"
    )
  per_lead = len(normalizer.mean) == len(ecg_io.STANDARD_LEADS)
  mean = normalizer.mean[columns] if per_lead else np.repeat(normalizer.mean, len(columns))
  std = normalizer.std[columns] if per_lead else np.repeat(normalizer.std, len(columns))
  return ModelSpec(
    method=config.method,
    class_names=class_names,
    input_leads=input_leads,
    student_leads=student_leads,
    fs=float(results.get("sampling_rate") or dataset_rate),
    crop_len=crop_len,
    stride=int(config.data.eval_stride) or max(crop_len // 2, 1),
    aggregate=str(config.data.eval_aggregate),
    thresholds=np.array([thresholds[name] for name in class_names], np.float64),
    mean=mean.astype(np.float32),
    # As Normalizer.apply: subtract the mean, multiply by the float32 reciprocal.
    inv_std=(1.0 / std).astype(np.float32),
    preprocessing=_dataset_preprocessing(config),
    record_seconds=record_length / dataset_rate if record_length else None,
  )


def _dataset_builder(config):
  """The TFDS builder of the run's dataset, made from the builder code (nothing is read or
  prepared); None when the code does not know the dataset (e.g. one registered in memory)."""
  import tensorflow_datasets as tfds

  import data_builders  # noqa: F401  (registers the builders)

  try:
    return tfds.builder(config.data.name)
  except (tfds.core.DatasetNotFoundError, ValueError):
    return None


def _dataset_facts(config) -> tuple[float, int | None]:
  """The run's sampling rate and record length (None when lengths vary) from its dataset's builder
  code (nothing is read or prepared), or from a dataset registered in memory (tests)."""
  from lead_kt.data import catalog

  builder = _dataset_builder(config)
  if builder is not None and hasattr(builder.builder_config, "sampling_rate"):
    return float(builder.builder_config.sampling_rate), builder.info.features["ecg"].shape[0]
  info = catalog.open_source(config.data).info
  return float(info.sampling_rate), info.record_length


def _dataset_preprocessing(config) -> RecordPreprocessing:
  """What the run's dataset builder did to its records besides resampling, from the builder code:
  the icbeb2018 filter and fixed length; nothing for other datasets or one registered in memory
  (stored as given). A dataset that is neither raises ValueError naming it. The run's
  `data.preprocessing` contract comes with it."""
  from data_builders.icbeb2018 import icbeb2018_dataset_builder as icbeb2018
  from lead_kt.data import catalog

  contract = config.data.get("preprocessing", "")
  builder = _dataset_builder(config)
  if builder is None:
    catalog.open_source(config.data)  # Known in memory, or a ValueError: unknown dataset.
    return RecordPreprocessing(contract=contract)
  builder_config = builder.builder_config
  if not isinstance(builder_config, icbeb2018.Icbeb2018Config):
    return RecordPreprocessing(contract=contract)
  return RecordPreprocessing(
    denoise_fs=float(icbeb2018.SOURCE_RATE) if builder_config.denoise else None,
    record_length=builder_config.record_length,
    contract=contract,
  )


def _dataset_crop_len(config) -> int:
  """Whole records of varying length (data.crop_len = 0): the window is the longest training
  record, which only the dataset knows; it must be at hand."""
  from lead_kt import input_pipeline

  return input_pipeline.dataset_info(config.data).crop_len


def _example_batch(spec: ModelSpec, num_classes: int, batch_size: int) -> dict:
  """A batch of the training shapes (only shapes matter: it feeds `method.init` abstractly)."""
  shape = (batch_size, spec.crop_len)
  return {
    "teacher": jax.ShapeDtypeStruct((*shape, len(ecg_io.STANDARD_LEADS)), jnp.float32),
    "student": jax.ShapeDtypeStruct((*shape, len(spec.student_leads)), jnp.float32),
    "label": jax.ShapeDtypeStruct((batch_size, num_classes), jnp.float32),
    "index": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
    "mask": jax.ShapeDtypeStruct((batch_size,), jnp.float32),
  }


def _read_json(run_dir: str, name: str) -> dict:
  path = os.path.join(run_dir, name)
  if not os.path.isfile(path):
    raise RunDirError(f"{path} is missing: is {run_dir} a finished lead_kt run?")
  try:
    with open(path) as json_file:
      return json.load(json_file)
  except (OSError, ValueError) as error:
    raise RunDirError(f"{path}: cannot read it ({error})") from error


def expand_inputs(paths: Sequence[str]) -> list[str]:
  """Records named by `paths`: files as given, directories searched (ecg_io.find_records)."""
  found = []
  for path in paths:
    found.extend(ecg_io.find_records(path) if os.path.isdir(path) else [path])
  return found


def predict_files(
  predictor: Predictor,
  paths: Sequence[str],
  csv_fs: float | None = None,
  progress: bool = True,
  naming: ecg_io.LeadNaming | None = None,
  segment_seconds: float | None = None,
) -> list[dict[str, Any]]:
  """predict_segments for each path, its rows in order; a record that fails gets one row with
  `file` and `error` (the message) instead."""
  from tqdm import tqdm

  rows = []
  for path in tqdm(paths, unit="record", disable=not progress or len(paths) < 2, file=sys.stderr):
    try:
      segments = predictor.predict_segments(path, csv_fs, naming, segment_seconds)
      rows.extend({**row, "error": ""} for row in segments)
    except ecg_io.EcgReadError as error:
      rows.append({"file": path, "error": str(error)})
  return rows


# The CSV columns before the classes' (p_<class>..., <class>...) and `error`.
_ROW_FIELDS = (
  "file",
  "segment",
  "start_s",
  "end_s",
  "aggregation",
  "leads",
  "ignored_channels",
  "fs_in",
  "fs_out",
  "num_windows",
)


def write_rows(rows: list[dict[str, Any]], class_names: Sequence[str], out) -> None:
  """CSV: file, segment, start_s, end_s, aggregation, leads, ignored_channels, fs_in, fs_out,
  num_windows, p_<class>..., <class> (0/1)..., error."""
  fields = [*_ROW_FIELDS, *(f"p_{name}" for name in class_names), *class_names, "error"]
  writer = csv.DictWriter(out, fieldnames=fields)
  writer.writeheader()
  for row in rows:
    flat = {key: row.get(key, "") for key in (*_ROW_FIELDS, "error")}
    if not row["error"]:
      flat["leads"] = " ".join(row["leads"])
      flat["ignored_channels"] = " ".join(row["ignored_channels"])
      for name in class_names:
        flat[f"p_{name}"] = f"{row['probabilities'][name]:.6f}"
        flat[name] = int(row["decisions"][name])
    writer.writerow(flat)


def _lead_map(text: str) -> dict[str, str]:
  """--lead-map's LABEL=LEAD,LABEL=LEAD,... as a dict."""
  pairs = [item.partition("=") for item in text.split(",") if item.strip()]
  if not pairs or any(not label.strip() or not equals for label, equals, _ in pairs):
    raise argparse.ArgumentTypeError(f"expected LABEL=LEAD[,LABEL=LEAD...], got {text!r}")
  return {label.strip(): lead.strip() for label, _, lead in pairs}


def _reserve_output(path: str) -> str:
  """The temporary file beside `path` that the output is written to and then renamed over `path`,
  created now: OSError before any work when `path` cannot be written."""
  directory = os.path.dirname(path)
  if directory and not os.path.isdir(directory):
    raise FileNotFoundError(f"its directory {directory} does not exist")
  if os.path.isdir(path):
    raise IsADirectoryError("it is a directory")
  partial = os.path.join(directory, f".{os.path.basename(path)}.partial")
  open(partial, "w").close()
  return partial


def _print_warning(message, *unused_args, **unused_kwargs) -> None:
  print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m lead_kt.predict", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--workdir", required=True, help="a finished run directory")
  parser.add_argument("--input", nargs="+", required=True, help="records or directories")
  parser.add_argument("--output", help="out.csv or out.json (default: CSV to stdout)")
  parser.add_argument(
    "--csv-fs", "--csv_fs", dest="csv_fs", type=float, help="sampling rate (Hz) of CSV inputs"
  )
  naming = parser.add_mutually_exclusive_group()
  naming.add_argument(
    "--lead", help="the lead of each record's single channel, whatever its label (e.g. I)"
  )
  naming.add_argument(
    "--lead-map",
    type=_lead_map,
    default={},
    help="channel labels as leads, e.g. ECG=I,chan2=II (labels in any case)",
  )
  parser.add_argument(
    "--segment-seconds",
    type=float,
    help="one prediction per this many seconds of each record (default: one per record)",
  )
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore step at INFO.
  compilation_cache.enable()
  if args.output and os.path.splitext(args.output)[1].lower() not in (".csv", ".json"):
    parser.error(f"--output must end in .csv or .json, got {args.output}")
  try:
    naming = ecg_io.LeadNaming(args.lead_map, args.lead)
  except ecg_io.EcgReadError as error:
    parser.error(str(error))
  if args.segment_seconds is not None and not args.segment_seconds > 0:
    parser.error(f"--segment-seconds must be positive, got {args.segment_seconds:g}")
  try:
    partial = _reserve_output(args.output) if args.output else None
  except OSError as error:
    print(f"error: cannot write --output {args.output}: {error.strerror or error}", file=sys.stderr)
    return 2
  try:
    return _predict_to(args, naming, partial)
  finally:
    if partial and os.path.exists(partial):
      os.remove(partial)


def _predict_to(args, naming: ecg_io.LeadNaming, partial: str | None) -> int:
  """main's work once its arguments are checked: the rows go to `partial`, then renamed to
  args.output (or to stdout when partial is None)."""
  try:
    predictor = Predictor(args.workdir)
    if args.segment_seconds is not None:
      predictor.segment_length(args.segment_seconds)
  except ValueError as error:  # A RunDirError, or segments shorter than the model's window.
    print(f"error: {error}", file=sys.stderr)
    return 2
  paths = expand_inputs(args.input)
  if not paths:
    print(f"error: no records found in {' '.join(args.input)}", file=sys.stderr)
    return 1
  with warnings.catch_warnings():
    warnings.simplefilter("always", RecordWarning)
    warnings.showwarning = _print_warning
    rows = predict_files(
      predictor, paths, args.csv_fs, naming=naming, segment_seconds=args.segment_seconds
    )
  for row in rows:
    if row["error"]:
      print(f"error: {row['error']}", file=sys.stderr)
  if partial is None:
    write_rows(rows, predictor.spec.class_names, sys.stdout)
  else:
    with open(partial, "w", newline="") as out:
      if args.output.lower().endswith(".json"):
        json.dump(rows, out, indent=2)
      else:
        write_rows(rows, predictor.spec.class_names, out)
    os.replace(partial, args.output)
  return 1 if any(row["error"] for row in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
