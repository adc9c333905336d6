"""lead_kt.evaluate: a finished run scored on a dataset without training, in report's layout."""

import json
import pathlib

import numpy as np
import pytest
import run_fixture

from lead_kt import evaluate, report


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  out = tmp_path_factory.mktemp("evaluations") / "tiny_on_ptbxl"
  assert evaluate.main(["--workdir", run_fixture.tiny_run(), "--out", str(out)]) == 0
  return out


def test_the_evaluation_of_a_run_on_its_own_dataset_is_its_test_result(evaluated):
  run_dir = pathlib.Path(run_fixture.tiny_run())
  trained, scored = (json.loads((d / "results.json").read_text()) for d in (run_dir, evaluated))
  for split in ("validation", "test"):
    assert scored[split]["macro_auc"] == pytest.approx(trained[split]["macro_auc"], abs=1e-9)
    with np.load(run_dir / "predictions" / f"{split}.npz") as a:
      with np.load(evaluated / "predictions" / f"{split}.npz") as b:
        np.testing.assert_allclose(b["scores"], a["scores"], atol=1e-6)
        np.testing.assert_array_equal(b["labels"], a["labels"])
  assert scored["test"]["ci95"] == trained["test"]["ci95"]
  assert scored["test"]["thresholds"] == trained["test"]["thresholds"]
  assert scored["evaluated"]["run"] == str(run_dir.resolve())


def test_report_reads_an_evaluation(evaluated, tmp_path):
  out = tmp_path / "report"
  argv = ["--workdirs", str(evaluated), run_fixture.tiny_run(), "--out", str(out)]
  assert report.main([*argv, "--labels", "scored", "trained", "--n-boot", "20"]) == 0
  text = (out / "report.md").read_text()
  assert "| scored | I | fcn_wang | " in text and "| trained | I | fcn_wang | " in text


def test_an_unfinished_workdir_or_a_used_out_is_one_line(evaluated, tmp_path, capsys):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  assert evaluate.main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "o")]) == 2
  assert "has not finished" in capsys.readouterr().err
  assert evaluate.main(["--workdir", run_fixture.tiny_run(), "--out", str(evaluated)]) == 2
  assert "exists and is not an empty directory" in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
