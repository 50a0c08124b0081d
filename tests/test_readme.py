"""Every command block of the README is run as typed by a test, or says beside it why no test runs it.

A block is marked `<!-- commands: NAME -->` (run: RUN_BY names the tests that read it with
`tests.conftest.readme_commands("NAME")` and run it) or `<!-- commands: NAME, not run: REASON -->` (the visible
text before the block says `Not run by the tests: REASON`). A line of a run block marked `# not run by the tests:
REASON` is left out of what the test runs, and says so where it stands."""

from __future__ import annotations

import re

from satori.core.config import REPO_ROOT
from tests.conftest import readme_blocks, readme_commands

RUN_BY = {
    "quickstart": ["tests/conftest.py", "tests/test_readme.py"],  # `make run`: the pipeline_run fixture; `make test`: CI
    "variant": ["tests/test_learning.py"],
    "rehearse": ["tests/test_rehearsal.py"],
    "gpu-bundle": ["tests/benchmarks/test_gpu_bundle.py"],
    "dvc-exp": ["tests/test_end_to_end.py"],
    "dvc-metrics": ["tests/test_end_to_end.py"],
    "prefect": ["tests/flows/test_readme_prefect.py"],
}
FENCE = re.compile(r"^ *```(bash|console|)\n(.*?)^ *```", re.DOTALL | re.MULTILINE)
space = lambda text: " ".join(text.split())  # noqa: E731


def command_blocks(text: str) -> list[str]:
    """Every fenced block a user is told to type: bash and console blocks, and plain ones showing a `$ ` line."""
    return [m[2] for m in FENCE.finditer(text) if m[1] or any(line.lstrip().startswith("$ ") for line in m[2].splitlines())]


def test_every_command_block_is_marked_and_each_mark_is_run_or_says_why_not():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    marked = readme_blocks()
    bodies = [block["body"].rstrip() for block in marked.values()]
    unmarked = [body.splitlines()[0] for body in command_blocks(text) if body.rstrip() not in bodies]
    assert not unmarked, f"README command blocks with no `<!-- commands: NAME -->` marker, first lines: {unmarked}"
    run = {name for name, block in marked.items() if block["reason"] is None}
    assert run == set(RUN_BY), (sorted(run), sorted(RUN_BY))
    for name, block in marked.items():
        if block["reason"] is not None:  # said where a reader sees it, just before the block
            before = space(text[max(0, block["at"] - 600) : block["at"]])
            assert f"Not run by the tests: {space(block['reason'])}" in before, name
            continue
        for path in RUN_BY[name]:
            assert f'readme_commands("{name}")' in (REPO_ROOT / path).read_text(encoding="utf-8"), (name, path)
        for line in block["body"].splitlines():  # a line left out says why, on the line
            assert "not run" not in line.lower() or "# not run by the tests: " in line, line


def test_ci_runs_the_readme_s_test_command():
    make_run, make_test = readme_commands("quickstart")
    assert (make_run, make_test) == ("make run", "make test")
    ci = (REPO_ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line and not line.startswith(("#", "set ", "cd "))] == [make_test]


def test_a_run_block_s_commands_leave_out_only_the_lines_marked_not_run():
    assert readme_commands("gpu-bundle") == ["make gpu-bundle"]
    assert readme_commands("dvc-metrics") == ["dvc metrics show"]
    assert readme_commands("dvc-exp")[-2:] == ["dvc exp show --only-changed --drop Created --no-pager", "dvc exp diff lr-low"]
