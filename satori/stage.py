"""What every stage does on entry, in one place: its paths from the command line (each a flag its
dvc.yaml cmd gives), its params from the active profile, and its MLflow run.

A stage declares the params it reads (`READS`, dotted paths inside the profile, `*` for all of it):
it can read only those, it logs exactly those to MLflow, and the lineage test holds dvc.yaml's
`params:` of the stage equal to them, so DVC re-runs it when, and only when, one of them changes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from satori import tracking
from satori.core.config import Profile, load_profile
from satori.core.errors import InputError

DEBUG_ENV = "SATORI_DEBUG"  # set: a bad param or input shows its traceback too
ERROR_PREFIX = "satori: error:"

WHOLE_PROFILE = "*"
# Set by a split run's flow for a stage that belongs to the other work pool: DVC may restore it from its run
# cache (the other worker ran it and pushed), never run it here.
RESTORE_ONLY_ENV = "SATORI_RESTORE_ONLY"


def stage_paths(doc: str, argv: list[str] | None, **flags: str) -> argparse.Namespace:
    """Parse the stage's path flags (name -> help; `out_gallery` is `--out-gallery`), all required."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help_text in flags.items():
        parser.add_argument("--" + name.replace("_", "-"), type=Path, required=True, help=help_text or None)
    return parser.parse_args(argv)


class Stage:
    """One stage run: `Stage(__file__, __doc__, argv, READS, out="help", ...)`, then `with stage.run():`."""

    def __init__(self, module_file: str, doc: str, argv: list[str] | None, reads: tuple[str, ...], **flags: str):
        self.name = Path(module_file).stem  # the module's name is the stage's name in dvc.yaml
        if os.environ.get(RESTORE_ONLY_ENV):
            raise InputError(
                f"stage {self.name} runs on the other work pool's worker, and DVC found no run of it to restore "
                f"(none in the DVC remote's run cache for these inputs): did that worker run it and `dvc push "
                f"--run-cache`? Both checkouts must be at the same commit with the same params"
            )
        self.args = stage_paths(doc, argv, **flags)
        self.profile_name, self._profile = load_profile()
        self.reads = reads
        for dotted in reads:  # a READS entry that names nothing fails at once, not when first read
            self._lookup(dotted)

    def read(self, dotted: str) -> Any:
        """A declared section or value of the active profile (`train`, `train.max_length`, `*`)."""
        if not any(r == WHOLE_PROFILE or dotted == r or dotted.startswith(r + ".") for r in self.reads):
            raise KeyError(
                f"stage {self.name} reads {dotted!r} without declaring it in READS {self.reads}: "
                f"dvc.yaml would not re-run the stage when it changes"
            )
        return self._lookup(dotted)

    def _lookup(self, dotted: str) -> Any:
        value: Any = self._profile
        if dotted != WHOLE_PROFILE:
            for key in dotted.split("."):
                value = getattr(value, key)
        return value

    @property
    def profile(self) -> Profile:
        return self.read(WHOLE_PROFILE)

    def logged_params(self) -> dict[str, Any]:
        """What the stage reads, nested as in params.yaml (flattened to dotted keys by tracking)."""
        logged: dict[str, Any] = {}
        for dotted in self.reads:
            value = self._lookup(dotted)
            value = value.model_dump() if isinstance(value, BaseModel) else value
            if dotted == WHOLE_PROFILE:
                logged.update(value)
                continue
            *parents, leaf = dotted.split(".")
            node = logged
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return logged

    @contextlib.contextmanager
    def run(self, continue_run: str | None = None, **also_logged: Any) -> Iterator[Any]:
        """The stage's MLflow run (a child of the pipeline run when there is one), logging the params it reads."""
        params = {**self.logged_params(), **also_logged}
        experiment = self._profile.mlflow_experiment
        with tracking.stage_run(self.name, experiment, self.profile_name, params, continue_run=continue_run) as run:
            yield run


def run_main(main: Callable[[], None]) -> None:
    """A stage's `__main__`: bad params or input (InputError) end it with their one sentence on stderr and
    exit code 2, no traceback (unless SATORI_DEBUG is set); any other failure shows its traceback."""
    try:
        main()
    except InputError as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{ERROR_PREFIX} {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
