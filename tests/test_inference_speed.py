"""lead_kt.bench.inference_speed on the tiny real run of tests/run_fixture.py."""

import json
import pathlib
import shutil

import pytest
import run_fixture

from lead_kt.bench import inference_speed


@pytest.fixture(scope="module")
def run_dir():
  return run_fixture.tiny_run()


def test_measures_predict_the_network_the_artefact_and_the_twin(run_dir):
  paths = run_fixture.ptbxl_test_records(run_dir)[:4]
  record = inference_speed.measure(run_dir, paths, batch=8, predict_batch=8, timed=4, rounds=2)
  assert record["method"] == "baseline" and record["backbone"] == "fcn_wang"
  assert record["predict"]["records"] == 4
  for name in ("cold", "warm"):
    assert record["predict"][name]["records_per_s"] > 0
  for side in ("jax", "stablehlo", "torch_eager"):
    assert record[side]["windows_per_s"] > 0
    assert record[side]["step_ms"]["n"] == 4
  assert "torch_compile" not in record
  assert record["jax_over_torch_eager"] == pytest.approx(
    record["jax"]["windows_per_s"] / record["torch_eager"]["windows_per_s"]
  )
  # The artefact computes the run's network: sigmoid of the same logits.
  assert record["stablehlo_max_abs_diff"] < 1e-5
  # The twin carries the run's trained weights: the same logits.
  assert record["torch_max_abs_logit_diff"] < 1e-4
  json.dumps(record)  # the record is JSON as it is
  table = inference_speed.summary(record)
  assert "| torch_eager |" in table and "records/s" in table


def test_a_record_that_fails_stops_the_measurement_with_its_reason(run_dir, tmp_path):
  good = run_fixture.ptbxl_test_records(run_dir)[0]
  broken = tmp_path / "broken"
  shutil.copy(good + ".hea", str(broken) + ".hea")
  pathlib.Path(str(broken) + ".dat").write_bytes(b"\0" * 10)
  with pytest.raises(ValueError, match="1 of 2 records failed"):
    inference_speed.measure(
      run_dir, [good, str(broken)], batch=8, predict_batch=8, timed=1, rounds=1
    )


def test_command_line_writes_the_record_and_prints_the_table(run_dir, tmp_path, capsys):
  record_path = run_fixture.ptbxl_test_records(run_dir)[0]
  output = tmp_path / "inference.json"
  inference_speed.main(
    ["--workdir", run_dir, "--input", record_path + ".hea", "--batch", "8", "--timed", "1"]
    + ["--rounds", "1", "--output", str(output)]
  )
  assert json.loads(output.read_text())["predict"]["records"] == 1
  assert "| jax |" in capsys.readouterr().out
