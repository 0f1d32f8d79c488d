"""softtok.reporting: the report helpers recipes and analysis share (JSON with NaN as null, results.json +
RESULTS.md, the command log, figures)."""

from __future__ import annotations

import json
import math

import pytest

from softtok.reporting import (commands_section, load_json, nan_to_none, pyplot, read_commands, save_figure,
                               save_json, write_report)


def test_nan_becomes_null_in_json(tmp_path):
    save_json(tmp_path / "m.json", {"a": math.nan, "b": [1.0, float("inf")], "c": {"d": 2.0}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2.0}}
    assert load_json(tmp_path / "m.json")["c"] == {"d": 2.0}
    assert nan_to_none((1.0, -math.inf)) == [1.0, None]
    with pytest.raises(FileNotFoundError, match="nowhere.json: file not found"):
        load_json(tmp_path / "nowhere.json")


def test_write_report_and_commands(tmp_path):
    write_report(tmp_path, {"x": 1}, "# R\n", name="analysis")
    assert json.loads((tmp_path / "analysis.json").read_text()) == {"x": 1}
    assert (tmp_path / "ANALYSIS.md").read_text() == "# R\n"
    assert read_commands(None) == "" and read_commands("") == ""
    (tmp_path / "commands.txt").write_text("run.sh --stage 1\n")
    assert commands_section(read_commands(str(tmp_path / "commands.txt")))[3] == "run.sh --stage 1"
    with pytest.raises(FileNotFoundError, match="command log not found"):
        read_commands(str(tmp_path / "none.txt"))


def test_save_figure_writes_a_png(tmp_path):
    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
