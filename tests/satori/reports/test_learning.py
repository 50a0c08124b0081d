from __future__ import annotations

import pytest

from satori.reports.learning import quarter_summary, read_reward_table


def test_first_and_last_quarter_means_and_spreads(tmp_path):
    csv = tmp_path / "train_rewards.csv"
    rows = ["step,reward,format,boxes"]
    rows += [f"{s},{s / 8},{1 - s / 8},0.5" for s in range(1, 9)]  # bbox unused in one row type below
    rows[-1] = "8,1.0,0.0,"
    csv.write_text("\n".join(rows) + "\n")
    table = read_reward_table(csv)
    assert table[-1]["boxes"] is None
    summary = quarter_summary(table)
    assert summary["reward"]["first"] == pytest.approx((1 / 8 + 2 / 8) / 2)  # steps 1-2 of 8
    assert summary["reward"]["last"] == pytest.approx((7 / 8 + 1.0) / 2)  # steps 7-8
    assert summary["reward"]["first_std"] == pytest.approx(1 / 16)
    assert summary["format"]["last"] - summary["format"]["first"] == pytest.approx(-0.75)
