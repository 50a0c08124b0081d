"""The command line of a stage: every path it reads or writes is a flag, given by its dvc.yaml cmd."""

from __future__ import annotations

import argparse
from pathlib import Path


def stage_paths(doc: str, argv: list[str] | None, **flags: str) -> argparse.Namespace:
    """Parse the stage's path flags (name -> help; `out_gallery` is `--out-gallery`), all required."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help_text in flags.items():
        parser.add_argument("--" + name.replace("_", "-"), type=Path, required=True, help=help_text or None)
    return parser.parse_args(argv)
