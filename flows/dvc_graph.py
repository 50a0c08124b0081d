"""DVC's graph as the flow reads it: the stages in an order they can run, which reach the network, which work
pool runs each in a split run, and the run cache pushed so that the other pool's worker restores them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger

from flows.stage_runner import StageError, stage_environment

# A split run (gpu_deployment): the flow runs on the cpu pool, the `meta: {pool: gpu}` stages of dvc.yaml in a
# deployment of satori_stages on the gpu pool, in that worker's checkout; outputs move through the DVC remote.
CPU_POOL = "cpu"


def pipeline_stages(folder: Path) -> list[tuple[str, bool]]:
    """The stages of folder's dvc.yaml in an order DVC's graph allows (each after the stages whose outputs
    it reads; ties in the order dvc.yaml lists them), each with whether it is a network stage."""
    from dvc.repo import Repo

    with Repo(str(folder)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage whose output it reads
        listed = list(repo.index.stages)
        waiting = {stage: set(graph.successors(stage)) for stage in listed}
        order = []
        while waiting:
            ready = [stage for stage in listed if stage in waiting and not waiting[stage]]
            if not ready:
                raise ValueError(f"{folder / 'dvc.yaml'}: the stages {sorted(s.name for s in waiting)} form a cycle")
            order.append(ready[0])
            del waiting[ready[0]]
            for needs in waiting.values():
                needs.discard(ready[0])
        return [(stage.name, bool((stage.meta or {}).get("network"))) for stage in order]


def stage_pools(folder: Path) -> dict[str, str]:
    """Each stage of folder's dvc.yaml -> the work pool it runs on in a split run (`meta: {pool: gpu}`;
    the rest: cpu, the pool of the flow itself)."""
    import yaml

    stages = (yaml.safe_load((folder / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    return {name: str((entry.get("meta") or {}).get("pool", CPU_POOL)) for name, entry in stages.items()}


def push_run_cache(folder: Path) -> None:
    """`dvc push --run-cache` to folder's default remote: the outputs and DVC's record of each stage run, so the
    other worker's `dvc repro --pull` restores those stages instead of running them."""
    done = subprocess.run([sys.executable, "-m", "dvc", "push", "--run-cache"], cwd=folder, env=stage_environment(),
                          capture_output=True, text=True)  # fmt: skip
    get_run_logger().info("dvc push --run-cache: %s", " ".join((done.stdout + done.stderr).strip().splitlines()[-1:]))
    if done.returncode != 0:
        raise StageError(
            f"dvc push --run-cache failed in {folder} (a split run moves outputs through the DVC remote: "
            f"`dvc remote add -d NAME URL` in both checkouts):\n{(done.stdout + done.stderr)[-3000:]}"
        )


