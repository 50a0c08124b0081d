"""The README's Prefect block, typed as is (the port aside) up to its lines marked not run, against a fresh Prefect
server: both work pools, then every deployment of prefect.yaml."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import yaml

from satori.core.config import REPO_ROOT
from tests.conftest import copy_with_venv, free_port, readme_commands, wait_until_healthy

pytestmark = pytest.mark.slow


def test_the_readme_s_prefect_steps_deploy_every_deployment_as_typed(tmp_path):
    server_line, *setup = readme_commands("prefect")
    assert setup[-1] == ".venv/bin/prefect --no-prompt deploy --all"
    assert server_line == ".venv/bin/prefect server start"
    repo = copy_with_venv(tmp_path / "checkout")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_API_PORT"] = str(port)  # `prefect server start` as typed, on a free port
    log = tmp_path / "server.log"
    server = subprocess.Popen(["bash", "-c", server_line], cwd=repo, env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/api/health", server, log)
        script = "set -euo pipefail\n" + "\n".join(setup).replace("127.0.0.1:4200", f"127.0.0.1:{port}")
        script += "\nCOLUMNS=300 .venv/bin/prefect deployment ls\n"
        done = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    listed = set(re.findall(r"satori-(?:pipeline|stages)/([\w-]+)", done.stdout))
    assert listed == {d["name"] for d in deployments} and len(listed) == 4, done.stdout
