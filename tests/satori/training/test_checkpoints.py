from __future__ import annotations

import json

from satori.training import checkpoints
from satori.core.config import REPO_ROOT, load_profile

PARAMS = REPO_ROOT / "params.yaml"


def test_last_checkpoint_is_the_highest_step(tmp_path):
    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert checkpoints.last_checkpoint(tmp_path).name == "checkpoint-10"


def test_resume_picks_the_newest_whole_checkpoint_and_drops_a_half_written_one(tmp_path):
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}/trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-3").mkdir()  # killed while saving: no trainer_state.json yet
    (tmp_path / "checkpoint-3/model.safetensors").write_bytes(b"half")
    assert checkpoints.resumable_checkpoint(tmp_path).name == "checkpoint-2"
    assert not (tmp_path / "checkpoint-3").exists()


def test_the_work_folder_is_keyed_by_what_decides_the_run(tmp_path):
    _, tiny = load_profile(PARAMS, name="tiny")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("a\n")
    key = checkpoints.run_key(tiny.train, tiny.vision, [data])
    assert checkpoints.run_key(tiny.train, tiny.vision, [data]) == key
    changed_params = checkpoints.run_key(tiny.train.model_copy(update={"learning_rate": 5e-4}), tiny.vision, [data])
    (data / "train.jsonl").write_text("b\n")
    changed_data = checkpoints.run_key(tiny.train, tiny.vision, [data])
    assert len({key, changed_params, changed_data}) == 3
    work_root = tmp_path / "work"
    (work_root / key / "swift_output").mkdir(parents=True)
    kept = checkpoints.prepare_work_dir(work_root, key)
    assert (kept / "swift_output").is_dir()  # same key: kept, to resume from
    checkpoints.prepare_work_dir(work_root, changed_data)
    assert [p.name for p in work_root.iterdir()] == [changed_data]  # the stale run's folder is gone
    (work_root / changed_data / "swift_output").mkdir()
    (work_root / changed_data / checkpoints.FINISHED_FILE).write_text("checkpoint-4")
    fresh = checkpoints.prepare_work_dir(work_root, changed_data)
    assert list(fresh.iterdir()) == []  # a finished run is not resumed: it starts afresh


def test_a_checkpoint_at_the_last_step_is_a_finished_training(tmp_path):
    def checkpoint(step, max_steps):
        folder = tmp_path / f"checkpoint-{step}-of-{max_steps}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
        return folder

    assert checkpoints.training_finished(checkpoint(4, 4))
    assert not checkpoints.training_finished(checkpoint(3, 4))  # killed before the end: resume it
    assert not checkpoints.training_finished(checkpoint(2, 0))  # no known end: never taken for finished
