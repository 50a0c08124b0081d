"""Beyond one machine, rehearsed on one (127.0.0.1): two machines training one model, and a pipeline split
across two Prefect work pools in two checkouts, the outputs moving through a DVC remote (a local folder).
Both start from the end-to-end run's checkout (its DVC cache holds the stages these variants do not change)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from satori.run_folders import prepare_run_dir
from tests.conftest import free_port, wait_until_healthy

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def dvc(cwd: Path, env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def train_runs(env: dict) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("satori-tiny").experiment_id
    return client.search_runs([experiment], "tags.`satori.stage` = 'train'")


def test_two_machines_train_one_model_node_0_s_stage_and_node_1_s_worker(pipeline_run, tmp_path):
    """Node 0 runs the DVC train stage, node 1 (another checkout, its own DVC cache) the documented worker
    command, which pulls its inputs from the remote: torch.distributed's launcher joins them (gloo), one
    process each, world size 2. One model, one MLflow run, node 0's export whole; node 1 keeps scratch only."""
    repo, env, *_ = pipeline_run
    steps, per_device = 2, 4
    # No validation pass (eval_steps past the last step): 37 s of two CPU processes this test does not need.
    overrides = ["train.nnodes=2", f"train.max_steps={steps}", "train.eval_steps=1000", f"train.save_steps={steps}",
                 f"train.per_device_train_batch_size={per_device}", f"train.per_device_eval_batch_size={per_device}"]  # fmt: skip
    remote = tmp_path / "remote"
    node0 = prepare_run_dir(repo, "tiny", overrides, "node0")
    dvc(node0, env, "remote", "add", "--local", "-d", "team", str(remote))
    dvc(node0, env, "repro", "preprocess", "fetch_base_model")  # the inputs of train, then to the remote
    dvc(node0, env, "push")
    # Node 1: a checkout of the same commit (its files and node 0's dvc.lock, as git pull brings them), no outputs.
    node1 = tmp_path / "node1"
    shutil.copytree(node0, node1, ignore=shutil.ignore_patterns("data", "models", "reports", "publish", ".work", "tmp", ".*.lock"))
    (node1 / ".dvc/config.local").write_text(f"[core]\n    no_scm = true\n    remote = team\n['remote \"team\"']\n    url = {remote}\n")
    lock_before = (node1 / "dvc.lock").read_text()
    runs_before = {run.info.run_id for run in train_runs(env)}

    machines = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    worker_log = (tmp_path / "node1.log").open("w")
    worker = subprocess.Popen([sys.executable, "-m", "stages.train", "--worker"], cwd=node1,
                              env={**machines, "NODE_RANK": "1"}, stdout=worker_log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        first = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "train"], cwd=node0, env=machines,
                               capture_output=True, text=True, timeout=900)  # fmt: skip
        worker.wait(timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
    worker_output = (tmp_path / "node1.log").read_text()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert worker.returncode == 0, worker_output[-4000:]

    # One run: the same key on both machines, torch.distributed across both.
    (run_folder,) = (node0 / ".work/train").glob("*/swift_output")
    key = run_folder.parent.name
    assert f"training run {key} from the start (1 process(es) on each of 2 machines" in first.stdout
    assert f"node 1 of 2: joining run {key} at 127.0.0.1:{machines['MASTER_PORT']}" in worker_output
    assert "--nnodes 2 --node_rank 0" in (run_folder.parent / "swift.log").read_text()
    assert "--nnodes 2 --node_rank 1" in (node1 / f".work/train/{key}/swift.log").read_text()
    # Each machine's rank saved its own RNG state; only node 0 saved the model.
    checkpoint = f"checkpoint-{steps}"
    assert {p.name for p in (run_folder / checkpoint).glob("rng_state*.pth")} == {"rng_state_0.pth"}
    assert {p.name for p in (node1 / f".work/train/{key}/swift_output/{checkpoint}").iterdir()} == {"rng_state_1.pth"}
    # Every step gathered world_size x per-device completions (one machine's copy alone would log its own 4).
    training_tables: dict[int, dict] = {}
    for line in (run_folder / "completions.jsonl").read_text().splitlines():
        table = json.loads(line)
        training_tables.setdefault(int(table["step"][0]), table)
    for step in range(1, steps + 1):
        assert len(training_tables[step]["completion"]) == 2 * per_device
    logged = [json.loads(line) for line in (run_folder / "logging.jsonl").read_text().splitlines()]
    assert sorted(r["global_step/max_steps"] for r in logged if "reward" in r) == [f"{s}/{steps}" for s in range(1, steps + 1)]

    # Node 0's export is whole: every weight of the base model, trained.
    import torch
    from safetensors.torch import load_file

    trained, base = load_file(node0 / "models/trained/model.safetensors"), load_file(node0 / "models/base/model.safetensors")
    assert set(trained) == set(base) and any(not torch.equal(trained[k], base[k]) for k in base)
    assert json.loads((node0 / "reports/train.json").read_text())["steps"] == steps
    # Node 1 wrote no DVC output and opened no MLflow run: one new train run, node 0's, with both ranks' steps.
    assert not any((node1 / path).exists() for path in ("models/trained", "reports/train.json", "reports"))
    assert (node1 / "dvc.lock").read_text() == lock_before
    (new_run,) = [run for run in train_runs(env) if run.info.run_id not in runs_before]
    assert new_run.data.params["train.nnodes"] == "2" and new_run.info.status == "FINISHED"
    import mlflow

    history = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_metric_history(new_run.info.run_id, "reward")
    assert sorted(point.step for point in history) == list(range(1, steps + 1))


def test_a_split_deployment_runs_cpu_stages_on_one_pool_and_gpu_stages_on_another(pipeline_run, tmp_path):
    """A real Prefect server, the satori-cpu and satori-gpu work pools, a process worker on each in its own
    checkout (the GPU one a git clone with an empty DVC cache): the split deployment of a variant (another
    dataset seed, 4 steps) runs fetch, preprocess and publish on the first, train and evaluate on the second,
    each side restoring the other's stages (and the stages the earlier run left in the remote) from the DVC
    remote, under one MLflow parent run."""
    repo, env, *_ = pipeline_run
    remote, gpu_checkout = tmp_path / "remote", tmp_path / "gpu-checkout"
    subprocess.run(["git", "clone", "-q", str(repo), str(gpu_checkout)], check=True)
    for checkout in (repo, gpu_checkout):
        dvc(checkout, env, "remote", "add", "--local", "-d", "--force", "split", str(remote))
    dvc(repo, env, "push")  # the team remote holds the earlier run (DVC pushes the runs a workspace's lock names)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api}
    prefect = [sys.executable, "-m", "prefect"]
    server = subprocess.Popen([*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    overrides = ["download.synthetic.seed=5", "train.max_steps=4", "train.eval_steps=1000", "train.save_steps=4"]
    workers = {}
    try:
        wait_until_healthy(f"{api}/health", server, tmp_path / "server.log")
        run = lambda *args: subprocess.run([*prefect, *args], cwd=repo, env=env, capture_output=True, text=True,  # noqa: E731
                                           timeout=300)  # fmt: skip
        for pool in ("satori-cpu", "satori-gpu"):
            done = run("work-pool", "create", pool, "--type", "process")
            assert done.returncode == 0, done.stdout + done.stderr
        done = run("--no-prompt", "deploy", "--all")
        assert done.returncode == 0, done.stdout + done.stderr
        parameters = json.dumps({"overrides": overrides, "name": "split"})
        done = run("deployment", "run", "satori-pipeline/satori-tiny-split", "--params", parameters)
        assert done.returncode == 0, done.stdout + done.stderr
        started = time.monotonic()
        # The CPU worker takes the run now scheduled and ends with it; the GPU one polls until the flow asks it.
        for pool, checkout, once in (("satori-cpu", repo, ["--run-once"]), ("satori-gpu", gpu_checkout, [])):
            workers[pool] = subprocess.Popen(
                [*prefect, "worker", "start", "--pool", pool, *once], cwd=checkout,
                env={**env, "SATORI_PIPELINE_DIR": str(checkout)}, stdout=(tmp_path / f"{pool}.log").open("w"),
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        code = workers["satori-cpu"].wait(timeout=1200)
        wall = time.monotonic() - started
        logs = "".join((tmp_path / f"{pool}.log").read_text()[-5000:] for pool in workers)
        assert code == 0, logs
        env["COLUMNS"] = "300"  # rich would cut the table's columns to the terminal's width
        for flow_name in ("satori-pipeline", "satori-stages"):
            runs = run("flow-run", "ls", "--flow-name", flow_name, "--state-type", "COMPLETED")
            assert runs.stdout.count("COMPLETED") == 1, runs.stdout + logs
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:  # a loaded machine: the worker's own shutdown is not tested here
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=20)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(f"split pipeline: {wall:.0f} s from the workers' start to both ending")

    cpu_run, gpu_run = repo / ".runs/split", gpu_checkout / ".runs/split"
    ran_in = lambda folder, stage: f"Running stage '{stage}'" in (folder / f".work/logs/{stage}.log").read_text()  # noqa: E731
    restored_in = lambda folder, stage: (  # noqa: E731
        f"Stage '{stage}' is cached - skipping run, checking out outputs" in (folder / f".work/logs/{stage}.log").read_text()
    )
    for stage in ("fetch_dataset", "preprocess", "publish", "record_run"):
        assert ran_in(cpu_run, stage), stage
    for stage in ("train", "evaluate"):
        assert ran_in(gpu_run, stage) and restored_in(cpu_run, stage), stage
    for stage in ("fetch_dataset", "fetch_base_model", "fetch_benchmarks", "preprocess"):
        assert restored_in(gpu_run, stage), stage  # the GPU side ran none of the CPU stages...
    assert restored_in(gpu_run, "evaluate_base") and restored_in(cpu_run, "evaluate_base")  # ...nor the earlier run's
    assert not (gpu_run / ".work/logs/publish.log").exists()
    # The outputs crossed whole: what the GPU side trained is what the CPU side published.
    for path in ("models/trained/model.safetensors", "reports/evaluate.json"):
        assert (cpu_run / path).read_bytes() == (gpu_run / path).read_bytes(), path
    assert (cpu_run / "publish/hub/model.safetensors").read_bytes() == (gpu_run / "models/trained/model.safetensors").read_bytes()
    train = json.loads((gpu_run / "reports/train.json").read_text())
    assert train["steps"] == 4
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("satori-tiny").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`satori.variant` = '" + " ".join(overrides) + "'")
    tags = parent.data.tags
    assert tags["satori.launched_by"] == "prefect deployment" and tags["mlflow.source.name"] == "flows/pipeline.py"
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["satori.ran"] == "fetch_dataset,preprocess,train,evaluate,publish"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    stages = {run.data.tags["satori.stage"]: run for run in children}
    assert set(stages) == {"fetch_dataset", "fetch_base_model", "fetch_benchmarks", "preprocess", "train",
                           "evaluate_base", "evaluate", "publish"}  # fmt: skip
    assert all(stages[s].data.tags["satori.cached"] == "true" for s in ("fetch_base_model", "evaluate_base"))
    evaluation = json.loads((cpu_run / "reports/evaluate.json").read_text())
    assert parent.data.metrics["SatoriTiny_MMStar.trained"] == pytest.approx(evaluation["SatoriTiny_MMStar"]["trained"])
    assert parent.data.metrics["train.final_reward"] == pytest.approx(train["final_reward"])
