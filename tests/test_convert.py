"""lead_kt.convert: a network trained in PyTorch becomes a run directory that teaches an MVKT
student, predicts and exports as the PyTorch network computes, on real records."""

import hashlib
import json
import pathlib
import pickle
import re
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
import run_fixture
from train_helpers import tiny_config

from lead_kt import convert, ecg_io, export, predict, train

torch = pytest.importorskip("torch")
torch_twins = pytest.importorskip("lead_kt.interop.torch_twins")

SAMPLE = pathlib.Path(__file__).parents[1] / "data_builders" / "ptbxl" / "sample" / "records100"
CLASSES = ("CD", "HYP", "MI", "NORM", "STTC")
# Deliberately not the sample's own statistics: the student must take the teacher's.
MEAN, STD = 0.01, 0.2
RECORDS = 8


@pytest.fixture(scope="module")
def records() -> list[str]:
  return ecg_io.find_records(SAMPLE)[:RECORDS]


def normalised(windows: np.ndarray) -> np.ndarray:
  """[B, T, L] mV -> the twin's input [B, L, T], normalised as the converted run does."""
  x = (windows.astype(np.float32) - np.float32(MEAN)) * (np.float32(1) / np.float32(STD))
  return np.ascontiguousarray(x.transpose(0, 2, 1))


@pytest.fixture(scope="module")
def twin_file(records, tmp_path_factory):
  """A fcn_wang twin after three AdamW steps on real records (BatchNorm statistics moved from
  their initial values), in eval mode, and the file torch.save wrote of its state_dict."""
  torch.manual_seed(0)
  twin = torch_twins.build("fcn_wang", 12, len(CLASSES))
  signals = np.stack([ecg_io.read_record(path).signal for path in records])
  labels = torch.from_numpy(np.eye(len(CLASSES), dtype=np.float32)[np.arange(RECORDS) % 5])
  optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-2)
  for step in range(3):
    optimizer.zero_grad()
    x = torch.from_numpy(normalised(signals[:, 250 * step : 250 * (step + 1)]))
    torch.nn.functional.binary_cross_entropy_with_logits(twin(x), labels).backward()
    optimizer.step()
  path = tmp_path_factory.mktemp("torch") / "fcn_wang.pth"
  torch.save(twin.state_dict(), path)
  return path, twin.eval()


def arguments(source, out, *extra) -> list[str]:
  return [
    "--from-torch", str(source), "--backbone", "fcn_wang", "--num-leads", "12",
    "--class-names", ",".join(CLASSES), "--sampling-rate", "100", "--out", str(out), *extra,
  ]  # fmt: skip


@pytest.fixture(scope="module")
def converted(twin_file, tmp_path_factory):
  out = tmp_path_factory.mktemp("runs") / "converted"
  argv = arguments(twin_file[0], out, "--mean", str(MEAN), "--std", str(STD))
  assert convert.main(argv) == 0
  return out


def test_the_run_directory_says_what_it_was_converted_from(twin_file, converted):
  results = json.loads((converted / "results.json").read_text())
  source = results["converted_from"]
  assert source["file"] == str(twin_file[0])
  assert source["sha256"] == hashlib.sha256(twin_file[0].read_bytes()).hexdigest()
  assert source["backbone"] == "fcn_wang" and "--from-torch" in source["arguments"]
  assert source["normalization"] == {"mean": [MEAN], "std": [STD]}
  assert results["method"] == "teacher" and results["class_names"] == list(CLASSES)
  assert results["student_leads"] == list(ecg_io.STANDARD_LEADS)
  normalization = json.loads((converted / "normalization.json").read_text())
  assert normalization["kind"] == "global"
  np.testing.assert_allclose([normalization["mean"][0], normalization["std"][0]], [MEAN, STD])
  identity = json.loads((converted / "run_identity.json").read_text())
  assert identity["method"] == "teacher" and identity["num_classes"] == len(CLASSES)
  assert [p.name for p in converted.parent.iterdir()] == ["converted"]  # no partial left


def test_predict_gives_the_pytorch_networks_logits(twin_file, converted, records):
  predictor = predict.Predictor(converted)
  windows = np.concatenate([predictor.model_windows(ecg_io.read_record(p)) for p in records[:3]])
  with torch.no_grad():
    expected = twin_file[1](torch.from_numpy(normalised(windows))).numpy()
  difference = np.max(np.abs(predictor.window_logits(windows) - expected))
  print(f"converted fcn_wang: max |logit difference| {difference:.2e}")
  assert difference < 1e-4
  result = predictor.predict_record(records[0])
  assert result["num_windows"] == 7 and result["leads"] == list(ecg_io.STANDARD_LEADS)
  for name, probability in result["probabilities"].items():
    assert result["decisions"][name] == (probability >= convert.THRESHOLD)


def test_export_gives_the_pytorch_networks_probabilities(twin_file, converted, records, tmp_path):
  contract = export.export(converted, tmp_path, onnx=False)
  assert contract["backbone"] == "fcn_wang" and contract["window_length"] == 250
  model = jax.export.deserialize((tmp_path / export.STABLEHLO_FILE).read_bytes())
  windows = predict.Predictor(converted).model_windows(ecg_io.read_record(records[1]))
  with torch.no_grad():
    expected = torch.sigmoid(twin_file[1](torch.from_numpy(normalised(windows)))).numpy()
  np.testing.assert_allclose(np.asarray(model.call(windows)), expected, atol=1e-5)


def test_a_one_lead_network_becomes_a_baseline_run_on_its_lead(records, tmp_path):
  torch.manual_seed(1)
  twin = torch_twins.build("fcn_wang", 1, len(CLASSES)).eval()
  # A fastai v1 Learner.save file: the state_dict under "model", beside the optimiser's state.
  source = tmp_path / "one_lead.pth"
  torch.save({"model": twin.state_dict(), "opt": {"lr": 1e-2, "steps": [3]}}, source)
  extra = ["--leads", "ii", "--mean", str(MEAN), "--std", str(STD)]
  argv = arguments(source, tmp_path / "converted", *extra)
  argv[argv.index("--num-leads") + 1] = "1"
  assert convert.main(argv) == 0
  predictor = predict.Predictor(tmp_path / "converted")
  assert predictor.spec.method == "baseline" and predictor.spec.input_leads == ("II",)
  windows = predictor.model_windows(ecg_io.read_record(records[0]))
  with torch.no_grad():
    expected = twin(torch.from_numpy(normalised(windows))).numpy()
  np.testing.assert_allclose(predictor.window_logits(windows), expected, atol=1e-4)


def test_an_mvkt_student_learns_from_the_converted_teacher(converted, tmp_path_factory):
  config = tiny_config("mvkt", str(tmp_path_factory.mktemp("tfds")), num_epochs=1)
  config.teacher.kwargs = ml_collections.ConfigDict()  # the benchmark's fcn_wang widths
  config.teacher.checkpoint = str(converted)
  workdir = tmp_path_factory.mktemp("student")
  results = train.train_and_evaluate(config, str(workdir))
  assert 0.0 <= results["test"]["macro_auc"] <= 1.0
  assert not (workdir / "teacher").exists()
  # The student's inputs are normalised as the teacher's were, not with statistics of its own.
  teachers = (converted / "normalization.json").read_text()
  assert (workdir / "normalization.json").read_text() == teachers


def test_a_scikit_learn_scaler_file_gives_the_normalisation(twin_file, tmp_path):
  from sklearn.preprocessing import StandardScaler

  values = np.random.default_rng(0).normal(0.05, 0.3, size=(1000, 1))
  scaler = StandardScaler().fit(values)  # as the benchmark: over all values
  scaler_file = tmp_path / "standard_scaler.pkl"
  scaler_file.write_bytes(pickle.dumps(scaler))
  out = tmp_path / "converted"
  out.mkdir()  # an empty directory is filled
  assert convert.main(arguments(twin_file[0], out, "--scaler", str(scaler_file))) == 0
  normalization = json.loads((out / "normalization.json").read_text())
  np.testing.assert_allclose(normalization["mean"], scaler.mean_, rtol=1e-6)
  np.testing.assert_allclose(normalization["std"], scaler.scale_, rtol=1e-6)
  source = json.loads((out / "results.json").read_text())["converted_from"]["normalization"]
  assert source["sha256"] == hashlib.sha256(scaler_file.read_bytes()).hexdigest()


def test_a_scaler_of_scikit_learn_before_0_22_reads_without_it(monkeypatch, tmp_path):
  # A class that pickles under the old module path, which no installed scikit-learn has.
  scaler_class = type("StandardScaler", (), {"__module__": "sklearn.preprocessing.data"})
  for name in ("sklearn", "sklearn.preprocessing", "sklearn.preprocessing.data"):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  sys.modules["sklearn.preprocessing.data"].StandardScaler = scaler_class
  scaler = scaler_class()
  scaler.__dict__.update(mean_=np.array([0.3]), scale_=np.array([2.0]), with_mean=False)
  path = tmp_path / "old.pkl"
  path.write_bytes(pickle.dumps(scaler))
  monkeypatch.undo()  # reading needs no scikit-learn module
  normalizer = convert.read_scaler(str(path))
  assert normalizer.kind == "global"
  assert normalizer.mean.tolist() == [0.0] and normalizer.std.tolist() == [2.0]  # with_mean=False


class _Opens:
  """Unpickled by plain pickle, this would create a file: a scaler file must not run code."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return open, (self.path, "w")


def test_a_scaler_file_that_would_run_code_is_refused(tmp_path):
  marker = tmp_path / "created"
  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps(_Opens(str(marker))))
  with pytest.raises(
    convert.ConvertError, match=r"evil\.pkl: not a pickled StandardScaler.*refused"
  ):
    convert.read_scaler(str(path))
  assert not marker.exists()


@pytest.mark.parametrize(
  ("case", "message"),
  [
    ("missing", r"missing\.pth: no such file"),
    ("not_torch", r"not_torch\.pth: torch\.load\(weights_only=True\) cannot read it"),
    ("other_backbone", r"fcn_wang\.pth: state_dict does not fit resnet1d_wang: .*missing"),
    ("class_count", r"fcn_wang\.pth: the fcn_wang head has 5 outputs but --class-names names 3"),
    ("no_layout", r"no PyTorch layout for --backbone cnn_hannun; supported: fcn_wang"),
    ("out_exists", r"converted exists and is not an empty directory"),
    ("leads", r"a 1-lead model needs --leads"),
  ],
)
def test_bad_inputs_are_named_with_the_cause(twin_file, tmp_path, capsys, case, message):
  source, out = twin_file[0], tmp_path / "converted"
  extra = ["--mean", "0", "--std", "1"]
  argv = arguments(source, out, *extra)
  if case == "missing":
    argv = arguments(tmp_path / "missing.pth", out, *extra)
  elif case == "not_torch":
    (tmp_path / "not_torch.pth").write_text("not a checkpoint")
    argv = arguments(tmp_path / "not_torch.pth", out, *extra)
  elif case in ("other_backbone", "no_layout"):
    argv[argv.index("fcn_wang")] = {"other_backbone": "resnet1d_wang"}.get(case, "cnn_hannun")
  elif case == "class_count":
    argv[argv.index(",".join(CLASSES))] = "CD,HYP,MI"
  elif case == "out_exists":
    out.mkdir()
    (out / "results.json").write_text("{}")
  elif case == "leads":
    argv[argv.index("--num-leads") + 1] = "1"
  assert convert.main(argv) == 2
  assert re.search(message, capsys.readouterr().err)
  assert not out.exists() or case == "out_exists"


def test_the_normalisation_must_be_given(twin_file, tmp_path):
  with pytest.raises(SystemExit):
    convert.main(arguments(twin_file[0], tmp_path / "converted"))


def test_an_out_that_cannot_be_written_is_refused_before_reading_the_weights(
  twin_file, tmp_path, monkeypatch, capsys
):
  def unread(path):
    raise AssertionError("the weights were read before the output was checked")

  monkeypatch.setattr(convert, "read_state_dict", unread)
  (tmp_path / "a_file").write_text("")
  out = tmp_path / "a_file" / "converted"
  argv = arguments(twin_file[0], out, "--mean", "0", "--std", "1")
  argv = ["--" + arg[2:].replace("-", "_") if arg.startswith("--") else arg for arg in argv]
  assert "--num_leads" in argv and "--class_names" in argv  # the other spelling of each flag
  assert convert.main(argv) == 2
  err = capsys.readouterr().err
  assert err == f"error: cannot write {out}: {tmp_path / 'a_file'} is a file, not a directory\n"


def test_a_converted_teacher_is_scored_on_a_dataset_and_reported(converted, tmp_path):
  """The evaluation gives the converted network the scores and thresholds it lacks."""
  from lead_kt import evaluate, report

  data_dir = run_fixture.run_config(run_fixture.tiny_run()).data.data_dir
  scored = tmp_path / "torch_teacher_on_ptbxl"
  argv = ["--workdir", str(converted), "--out", str(scored), "--data_dir", data_dir]
  assert evaluate.main(argv) == 0
  results = json.loads((scored / "results.json").read_text())
  assert results["method"] == "teacher" and results["split_sizes"]["test"] == 53
  low, high = results["test"]["ci95"]["macro_auc"]
  assert low <= results["test"]["macro_auc"] <= high
  assert set(results["test"]["thresholds"]) == set(CLASSES)
  out = tmp_path / "report"
  assert report.main(["--workdirs", str(scored), "--out", str(out), "--n-boot", "20"]) == 0
  assert "| torch_teacher_on_ptbxl | 12 leads | fcn_wang | " in (out / "report.md").read_text()
