"""A run's results as people read them: the table `make run` prints, and the README's numbers, made from the
reports a run leaves (never typed by hand).

The README marks each generated block `<!-- generated: NAME -->` ... `<!-- /generated: NAME -->`:

    .venv/bin/python -m satori.reports.results            # rewrite them from this checkout's reports (after `make run`)
    .venv/bin/python -m satori.reports.results --check    # exit 1, naming the blocks, when the README disagrees

Since the embedded default computes the same bits on every machine (satori.core.cpu_numerics), any machine's run
gives the committed numbers; tests/test_end_to_end.py checks the README against the session's run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from satori.core.reward_registry import REWARD_LABELS
from satori.reports.learning import quarter_summary, read_reward_table

README = Path("README.md")
# Tables a benchmark (with --write) or `make lock` writes, committed beside it: README block -> file.
SWEEP_TABLE = Path("benchmarks/learning_sweep.md")  # benchmarks/learning_sweep.py --seeds ... --write
PINNING_COST_TABLE = Path("benchmarks/cpu_numerics.md")  # benchmarks/cpu_numerics.py --write
GPU_LOCK_TABLE = Path("locks/gpu_differences.md")  # locks/refresh.py
COMMITTED_TABLES = {"learning-sweep": SWEEP_TABLE, "pinning-cost": PINNING_COST_TABLE,
                    "gpu-lock-differences": GPU_LOCK_TABLE}  # fmt: skip
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated: (?P=name) -->)", re.DOTALL)


def shares_text(shares: dict[str, float]) -> str:
    """Answer shares as people read them: `A 25% B 31% other 44%`."""
    return " ".join(f"{key} {100 * share:.0f}%" for key, share in shares.items())


def console_table(evaluation: dict) -> str:
    """Base against trained accuracy (%) per benchmark, and each model's answers by letter (share of questions); the
    paper's base and trained numbers beside them where the report has them (its base model is the paper's); under
    it, each judged benchmark's judge-free numbers, the agreement and its judge."""
    with_paper = any("paper" in row for row in evaluation.values())
    paper_header = f" {'paper base':>10} {'paper':>6}" if with_paper else ""
    lines = [f"{'benchmark':<24} {'base':>6} {'trained':>8} {'delta':>7}{paper_header}   answers: base | trained"]
    for name, row in evaluation.items():
        published = row.get("paper")
        paper = (f" {published['base']:>10.1f} {published['trained']:>6.1f}" if published else f" {'-':>10} {'-':>6}") if with_paper else ""
        lines.append(
            f"{name:<24} {100 * row['base']:>6.1f} {100 * row['trained']:>8.1f} {100 * row['delta']:>+7.1f}{paper}   "
            f"{shares_text(row.get('base_answer_shares', {}))} | {shares_text(row.get('trained_answer_shares', {}))}"
        )
    for name, row in evaluation.items():  # a judged benchmark: a rule's number beside the judge's, and its judge
        if "judge" in row:
            judge = row["judge"]
            lines.append(
                f"{name}: judge-free {100 * row['base_judge_free']:.1f} -> {100 * row['trained_judge_free']:.1f}, judge "
                f"and rule agree on {100 * row['base_judge_agreement']:.0f}% | {100 * row['trained_judge_agreement']:.0f}%, "
                f"{row['base_judge_failures'] + row['trained_judge_failures']} judge call(s) failed; judge "
                f"{judge['model']} at {judge['host']} ({judge['prompt']})"
            )
    return "\n".join(lines)


def quarters_table(rewards_csv: Path) -> str:
    """First against last quarter of the steps per reward (mean ± standard deviation), as a markdown table."""
    summary = quarter_summary(read_reward_table(rewards_csv))
    lines = ["| reward | first quarter | last quarter | change |", "|---|---|---|---|"]
    for column in ("reward", *REWARD_LABELS.values()):
        if column not in summary:
            continue
        row = summary[column]
        cells = ["total" if column == "reward" else column, f"{row['first']:.3f} ± {row['first_std']:.3f}", f"{row['last']:.3f} ± {row['last_std']:.3f}",
                 f"{row['last'] - row['first']:+.3f}"]  # fmt: skip
        if column == REWARD_LABELS["extern_vqa_acc"]:  # what the task is about
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dvc_metrics_show(checkout: Path) -> str:
    """`dvc metrics show` as DVC prints it in the checkout (its table of reports/metrics.json)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=checkout, capture_output=True,
                          text=True, check=True, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    return "\n".join(line.rstrip() for line in done.stdout.strip().splitlines())


def blocks(checkout: Path) -> dict[str, str]:
    """Each generated block's text, from the checkout's reports (and the benchmarks' committed tables)."""
    evaluation = json.loads((checkout / "reports/evaluate.json").read_text(encoding="utf-8"))
    return {
        "results-table": f"```\n{console_table(evaluation)}\n```\n",
        "learning-quarters": quarters_table(checkout / "reports/train_rewards.csv") + "\n",
        "dvc-metrics": f"```console\n$ dvc metrics show\n{dvc_metrics_show(checkout)}\n```\n",
        **{name: (checkout / path).read_text(encoding="utf-8") for name, path in COMMITTED_TABLES.items()},
    }


def render(readme: str, generated: dict[str, str]) -> str:
    """readme with every marked block replaced; a block the README marks but nothing generates is an error."""
    unknown = sorted({m["name"] for m in BLOCK.finditer(readme)} - set(generated))
    if unknown:
        raise KeyError(f"README blocks nothing generates: {unknown}")
    return BLOCK.sub(lambda m: m.group(1) + generated[m["name"]] + m.group(4), readme)


def disagreeing(readme: str, generated: dict[str, str]) -> list[str]:
    """The blocks whose README text differs from the generated one, and those the README lacks."""
    found = {m["name"]: m["body"] for m in BLOCK.finditer(readme)}
    return [name for name, text in generated.items() if found.get(name) != text]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the README disagrees")
    parser.add_argument("--reports-from", type=Path, default=Path("."), help="the checkout whose reports to read")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    generated = blocks(args.reports_from)
    if args.check:
        stale = disagreeing(readme, generated)
        if stale:
            raise SystemExit(f"README.md disagrees with the reports in {args.reports_from} in blocks {stale}: run "
                             f"`.venv/bin/python -m satori.reports.results` after `make run`")  # fmt: skip
        print(f"README.md agrees with the reports in {args.reports_from}")
        return
    README.write_text(render(readme, generated), encoding="utf-8")


if __name__ == "__main__":
    main()
