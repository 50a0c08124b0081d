"""satori.reports.results: the console table, the quarters table and the README's generated blocks."""

from __future__ import annotations

import pytest

from satori.reports.results import console_table, disagreeing, quarters_table, render


def test_the_console_table_shows_base_against_trained_and_the_answers_by_letter():
    evaluation = {"B": {"base": 0.4375, "trained": 0.75, "delta": 0.3125,
                        "base_answer_shares": {"A": 0.25, "C": 0.75}, "trained_answer_shares": {"A": 0.5, "D": 0.5}}}  # fmt: skip
    header, row = console_table(evaluation).splitlines()
    assert header.split() == ["benchmark", "base", "trained", "delta", "answers:", "base", "|", "trained"]
    assert row.split() == ["B", "43.8", "75.0", "+31.2", "A", "25%", "C", "75%", "|", "A", "50%", "D", "50%"]


def test_the_quarters_table_has_each_used_reward_s_first_and_last_quarter(tmp_path):
    rows = ["step,reward,format,boxes,answer,caption"]
    rows += [f"{step},{step},1.0,,{0.25 if step <= 2 else 0.75},0.5" for step in range(1, 9)]
    (tmp_path / "rewards.csv").write_text("\n".join(rows) + "\n")
    lines = quarters_table(tmp_path / "rewards.csv").splitlines()
    # Quarters of 8 steps: steps 1-2 and 7-8; population standard deviation.
    assert lines[2] == "| total | 1.500 ± 0.500 | 7.500 ± 0.500 | +6.000 |"
    assert lines[3] == "| format | 1.000 ± 0.000 | 1.000 ± 0.000 | +0.000 |"
    assert lines[4] == "| **answer** | **0.250 ± 0.000** | **0.750 ± 0.000** | **+0.500** |"
    assert lines[5] == "| caption | 0.500 ± 0.000 | 0.500 ± 0.000 | +0.000 |"
    assert len(lines) == 6  # boxes: not used by this run


def test_blocks_are_replaced_between_their_markers_and_a_stale_one_is_named():
    readme = "a\n<!-- generated: t -->\nold\n<!-- /generated: t -->\nb\n<!-- generated: u -->\n<!-- /generated: u -->\n"
    fresh = render(readme, {"t": "new\n", "u": "x\n"})
    assert fresh == "a\n<!-- generated: t -->\nnew\n<!-- /generated: t -->\nb\n<!-- generated: u -->\nx\n<!-- /generated: u -->\n"
    assert disagreeing(readme, {"t": "new\n", "u": ""}) == ["t"]
    assert disagreeing(fresh, {"t": "new\n", "u": "x\n", "v": "y\n"}) == ["v"]  # a block the README lacks
    with pytest.raises(KeyError, match="'t'"):
        render(readme, {"u": ""})
