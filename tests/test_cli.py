"""lead_kt.cli: one-line errors, both flag spellings, output directories that appear whole."""

import ml_collections
import pytest

from lead_kt import cli


def test_a_config_key_error_is_one_line_without_its_repr():
  config = ml_collections.ConfigDict({"backbone": "fcn_wang"})
  with pytest.raises(AttributeError) as raised:
    config.backbonee  # noqa: B018
  assert cli.one_line(raised.value) == (
    '\'backbonee\'; Did you mean "backbone" instead of "backbonee"?'
  )
  assert cli.one_line(KeyError("plain")) == "plain"


def test_options_read_in_either_spelling():
  parser = cli.ArgumentParser()
  parser.add_argument("--num-leads", type=int)
  parser.add_argument("--no-onnx", action="store_true")
  parser.add_argument("--out")
  args = parser.parse_args(["--num_leads=3", "--no_onnx", "--out", "a_dir/with_underscores"])
  assert (args.num_leads, args.no_onnx, args.out) == (3, True, "a_dir/with_underscores")
  assert parser.parse_args(["--num-leads", "4"]).num_leads == 4


def test_require_finished_run_says_what_the_directory_is(tmp_path):
  with pytest.raises(cli.CliError, match="nowhere does not exist"):
    cli.require_finished_run(tmp_path / "nowhere")
  (tmp_path / "started" / "teacher").mkdir(parents=True)
  with pytest.raises(cli.CliError, match="has not finished .* resume it .*--workdir=.*started"):
    cli.require_finished_run(tmp_path / "started")
  (tmp_path / "other").mkdir()
  with pytest.raises(cli.CliError, match="other is not a lead_kt run directory"):
    cli.require_finished_run(tmp_path / "other")
  (tmp_path / "other" / "results.json").write_text("{}")
  assert cli.require_finished_run(tmp_path / "other") == tmp_path / "other"


def test_an_output_directory_appears_whole_or_not_at_all(tmp_path):
  out = tmp_path / "parent" / "out"
  with cli.output_directory(out) as staging:
    (staging / "a.txt").write_text("a")
    assert not out.exists()
  assert [p.name for p in out.iterdir()] == ["a.txt"]
  with pytest.raises(cli.CliError, match="exists and is not an empty directory"):
    with cli.output_directory(out):
      raise AssertionError("the block ran")
  with pytest.raises(RuntimeError), cli.output_directory(tmp_path / "failed") as staging:
    (staging / "half.txt").write_text("half")
    raise RuntimeError("the work failed")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["parent"]
  (tmp_path / "empty").mkdir()
  with cli.output_directory(tmp_path / "empty") as staging:
    (staging / "b.txt").write_text("b")
  assert [p.name for p in (tmp_path / "empty").iterdir()] == ["b.txt"]


def test_an_updated_output_directory_replaces_files_and_keeps_others(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "report.md").write_text("old")
  (out / "notes.txt").write_text("mine")
  with cli.output_directory(out, update=True, last="report.md") as staging:
    (staging / "report.md").write_text("new")
    (staging / "plot.png").write_text("png")
  assert {p.name: p.read_text() for p in out.iterdir()} == {
    "report.md": "new",
    "notes.txt": "mine",
    "plot.png": "png",
  }
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_that_cannot_be_made_is_refused_before_the_work(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(
    cli.CliError, match="cannot write .*a_file/out: .*a_file is a file, not a directory"
  ):
    with cli.output_directory(tmp_path / "a_file" / "out"):
      raise AssertionError("the block ran")
