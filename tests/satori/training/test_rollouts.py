from __future__ import annotations

import json

import pytest

from satori.training import rollouts
from satori.core.config import VisionParams


def test_diagnostics_tie_completions_to_their_rows_image_sizes_and_flag_whole_image_boxes(tmp_path):
    # Two rows ask the same question of images of different sizes: only the logged `solution` (the row's
    # source) tells them apart.
    rows = [
        {"messages": [{"role": "user", "content": "<image>Q?"}], "width": 280, "height": 280, "solution": "t:1"},
        {"messages": [{"role": "user", "content": "<image>Q?"}], "width": 560, "height": 280, "solution": "t:2"},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    vision = VisionParams(min_pixels=3136, max_pixels=50176)  # 280x280 is seen as 224x224, 560x280 as 308x140
    sizes = rollouts.seen_sizes_by_source([tmp_path / "train.jsonl"], vision)
    assert sizes == {"t:1": (224, 224), "t:2": vision.seen_size(560, 280)}

    whole = "<caption>c</caption> <bbox>[[0,0,224,224]]</bbox> <answer>A</answer>"
    small = "<caption>c</caption> <bbox>[[0,0,20,20],[5,5,9,9]]</bbox> <answer>B.</answer>"
    # [0,0,224,224] covers the whole of the 224x224 image, not of the wider one.
    steps = [
        {"step": ["1", "1"], "solution": ["t:1", "t:2"], "completion": [whole, small]},
        {"step": ["2"], "solution": ["t:2"], "completion": ["junk"]},
        {"step": ["2"], "solution": ["t:2"], "completion": [whole]},  # an eval rollout, same step
        {"step": ["3"], "solution": ["elsewhere:9"], "completion": [whole]},  # a row not in the data
    ]
    (tmp_path / "completions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    diagnostics = rollouts.completion_diagnostics(tmp_path / "completions.jsonl", sizes)
    assert diagnostics == [
        {"step": 1, "format_rate": 1.0, "mean_boxes": 1.5, "whole_image_box_rate": 1 / 3, "mean_answer_chars": 1.5,
         "size_known_rate": 1.0},
        {"step": 2, "format_rate": 0.5, "mean_boxes": 0.5, "whole_image_box_rate": 0.0, "mean_answer_chars": 0.5,
         "size_known_rate": 1.0},
        {"step": 3, "format_rate": 1.0, "mean_boxes": 1.0, "whole_image_box_rate": 0.0, "mean_answer_chars": 1.0,
         "size_known_rate": 0.0},
    ]  # fmt: skip


def test_first_and_last_samples_show_both_steps_with_true_rewards(tmp_path):
    rows = {"t:1": {"possible_answers": ["B", "B. green"]}, "t:2": {"possible_answers": ["D"]}}
    steps = [
        {"step": ["1", "1"], "solution": ["t:1", "t:2"], "completion": ["<answer>A</answer>", "a|b"],
         "Format": [0.25, 1.0], "VQAAccuracy": [1.0, 0.0]},
        {"step": ["1"], "solution": ["t:2"], "completion": ["an eval rollout"], "Format": [0.0], "VQAAccuracy": [0.0]},
        {"step": ["7", "7"], "solution": ["t:2", "gone:3"], "completion": ["<answer>D</answer>", "x\n  y"],
         "Format": [0.0, 0.5], "VQAAccuracy": [0.0, 1.0]},
    ]  # fmt: skip
    (tmp_path / "completions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    # The control run logs 1 - r: the report shows r.
    text = rollouts.first_and_last_samples(
        tmp_path / "completions.jsonl", rows, ["external_format", "extern_vqa_acc"], inverted=True, count=3
    )
    lines = text.splitlines()
    assert lines[0] == "| # | step 1 | step 7 |"
    assert lines[2] == (
        "| 1 | truth `B`: `` <answer>A</answer> `` (format 0.75, answer 0.00)"
        " | truth `D`: `` <answer>D</answer> `` (format 1.00, answer 1.00) |"
    )
    assert lines[3] == (
        "| 2 | truth `D`: `` a\\|b `` (format 0.00, answer 1.00) | truth `?`: `` x y `` (format 0.50, answer 0.00) |"
    )
    assert lines[4] == "| 3 |  |  |"
    assert "eval rollout" not in text


# A well-formed completion with one small box in a 224x224 image.
GOOD = "<caption>A red circle on a light gray background.</caption> <bbox>[[10,10,50,50]]</bbox> <answer>red</answer>"


def test_summarize_completions_flags_whole_image_boxes():
    completions = [
        GOOD,  # one small box in a 224x224 image
        GOOD.replace("[[10,10,50,50]]", "[[0,0,224,224],[1,1,2,2]]"),  # one whole-image box
        "no format at all <answer>  four  </answer>",
    ]
    summary = rollouts.summarize_completions(completions, [(224, 224), (224, 224), None])
    assert summary == {
        "format_rate": pytest.approx(2 / 3),
        "mean_boxes": pytest.approx(1.0),
        "whole_image_box_rate": pytest.approx(1 / 3),
        "mean_answer_chars": pytest.approx((3 + 3 + 4) / 3),
    }
    assert rollouts.summarize_completions([])["format_rate"] == 0.0


def test_galleries_keep_training_and_validation_rollouts_apart_from_step_1(tmp_path, isolated_env):
    import mlflow
    from PIL import Image

    from satori import tracking

    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "red.png")
    rows = {f"t:{i}": {"images": [str(tmp_path / "red.png")], "bboxs": [[0, 0, 8, 8]], "possible_answers": ["red"]}
            for i in range(3)}  # fmt: skip
    answer = "<caption>c</caption> <bbox>[[0,0,20,20]]</bbox> <answer>red</answer>"
    tables = [
        {"step": ["1", "1"], "solution": ["t:0", "t:1"], "completion": [answer, answer]},
        {"step": ["2", "2"], "solution": ["t:1", "t:2"], "completion": [answer, answer]},
        {"step": ["2"], "solution": ["t:0"], "completion": [answer]},  # validation rollouts, evaluation step 2
        {"step": ["2"], "solution": ["t:2"], "completion": [answer]},
    ]
    completions = tmp_path / "completions.jsonl"
    completions.write_text("".join(json.dumps(t) + "\n" for t in tables))
    training, validation = rollouts.training_and_validation(completions)
    assert training == {1: tables[0], 2: tables[1]} and validation == {2: tables[2:]}
    with tracking.stage_run("train", "exp-gallery", "tiny", {}) as run:
        rollouts.log_galleries(completions, rows, VisionParams(min_pixels=3136, max_pixels=50176))
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    names = [a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "images")]
    # MLflow names an image file <key, / as ~>+step+<step>+timestamp+...
    logged = sorted((name.split("+")[0], int(name.split("+")[2])) for name in names if name.endswith(".png"))
    assert logged == [("gallery~train", 1), ("gallery~train", 2), ("gallery~validation", 2)]
