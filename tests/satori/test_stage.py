from __future__ import annotations

import pytest

from satori.stage import Stage


def test_a_stage_reads_and_logs_exactly_what_it_declares(use_profile):
    use_profile("tiny")
    stage = Stage("stages/preprocess.py", "doc", ["--raw", "r", "--out", "o"], ("preprocess", "train.max_length"),
                  raw="", out="")  # fmt: skip
    assert stage.name == "preprocess" and str(stage.args.raw) == "r"
    assert stage.read("train.max_length") == stage._profile.train.max_length
    assert stage.read("preprocess.val_fraction") == stage._profile.preprocess.val_fraction  # inside a declared section
    with pytest.raises(KeyError, match="reads 'train.learning_rate' without declaring it"):
        stage.read("train.learning_rate")
    with pytest.raises(KeyError, match="reads 'vision' without declaring it"):
        stage.read("vision")
    logged = stage.logged_params()
    assert logged == {
        "preprocess": stage._profile.preprocess.model_dump(),
        "train": {"max_length": stage._profile.train.max_length},
    }


def test_reading_the_whole_profile_logs_all_of_it_and_a_wrong_declaration_fails_at_once(use_profile):
    use_profile("tiny")
    stage = Stage("stages/publish.py", "doc", [], ("*",))
    assert stage.profile.publish.push is False
    assert stage.logged_params() == stage._profile.model_dump()
    with pytest.raises(AttributeError, match="no_such_section"):
        Stage("stages/x.py", "doc", [], ("no_such_section",))


def test_a_stage_another_work_pool_runs_never_runs_here(use_profile, monkeypatch):
    """A split run restores the other pool's stages from DVC's run cache; when DVC finds no run to restore and
    starts the stage instead, it stops before reading anything, saying where it should have come from."""
    from satori.core.errors import InputError
    from satori.stage import RESTORE_ONLY_ENV

    use_profile("tiny")
    monkeypatch.setenv(RESTORE_ONLY_ENV, "1")
    with pytest.raises(InputError, match=r"stage train runs on the other work pool's worker, and DVC found no run"):
        Stage("stages/train.py", "doc", ["--out", "x"], ("train",), out="")
