"""``jobs/sweep.py``: the Ray job entry point forwards to ``dynvid sweep run`` (the sweep itself
runs in tests/engine/test_sweep.py on the shared Ray cluster); bad input is one line, exit 2."""

from pathlib import Path

import sweep as sweep_job  # jobs/ is on pytest's pythonpath (pyproject.toml)

REPO = Path(__file__).resolve().parents[2]


def test_help_and_missing_argument(capsys):
    assert sweep_job.main(["--help"]) == 0
    assert "ray job submit" in capsys.readouterr().out
    assert sweep_job.main([]) == 2


def test_a_missing_sweep_file_is_named(capsys, tmp_path):
    assert sweep_job.main([str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_a_bad_knob_is_named_before_anything_runs(capsys, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text((REPO / "search_spaces" / "vared.yaml").read_text().replace("vared.search_space:", "vared.search_spaec:"))
    assert sweep_job.main([str(spec)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: knobs.vared.search_spaec" in err and "search_spaec" in err
