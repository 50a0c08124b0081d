"""Evaluation throughput: the SATORI adapter at batch 1 (VLMEvalKit's way) against batched, side by side.

Same model, same MMBench-shaped questions (prompted as VLMEvalKit's MCQ datasets prompt them, with
the SATORI instruction), greedy decoding, in one run. Prints samples/s for each, the ratio, how
many completions are identical and the accuracy of each.

    .venv/bin/python -m benchmarks.eval_throughput               # tiny model on the CPU (fp32)
    .venv/bin/python -m benchmarks.eval_throughput --random-3b   # Qwen2.5-VL-3B-shaped, random (GPU, bf16)
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path

from satori.core.config import REPO_ROOT
from satori.core.prompt import mcq_question, system_prompt
from satori.data import synthetic

# Qwen2.5-VL-3B-Instruct's published config values (no download: the weights are random).
QWEN25_VL_3B = {
    "text": dict(
        hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    ),
    "vision": dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
    ),
}  # fmt: skip


def random_3b_config():
    """The tiny model's config (Qwen's token ids) with Qwen2.5-VL-3B's sizes."""
    from transformers import Qwen2_5_VLConfig

    from satori.data import tiny_model

    tiny_config = tiny_model.build_config(32, 1)
    text = {**tiny_config.text_config.to_dict(), **QWEN25_VL_3B["text"], "tie_word_embeddings": True}
    text.pop("layer_types", None)  # derived from num_hidden_layers again
    vision = {**tiny_config.vision_config.to_dict(), **QWEN25_VL_3B["vision"]}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)


def build_random_3b(out_dir: Path) -> Path:
    """A Qwen2.5-VL-3B-shaped model with random bf16 weights and the project's Qwen-id tokenizer."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from satori.data import tiny_model

    tiny_model.build_tiny_model(
        out_dir,
        seed=0,
        hidden_size=32,
        num_layers=1,
        bpe_vocab_size=1000,
        min_pixels=200704,
        max_pixels=401408,
        corpus=synthetic.tokenizer_corpus(system_prompt(REPO_ROOT / "prompt.txt"), rows=40),
    )  # fmt: skip  (for its tokenizer and processor; the weights are replaced below)
    config = random_3b_config()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = [tiny_model.FIRST_SPECIAL_ID + 2, tiny_model.FIRST_SPECIAL_ID]
    model.save_pretrained(out_dir)
    return out_dir


def questions(count: int, seed: int, folder: Path) -> list[tuple[int, list[dict], str]]:
    """(index, VLMEvalKit message, correct letter) for `count` MMBench-shaped questions."""
    rows = synthetic.benchmark_rows(questions=count, seed=seed, circular=False, category_column="l2-category")
    planned = []
    for row in rows:
        image = folder / f"{row['index']}.png"
        image.write_bytes(base64.b64decode(row["image"]))
        text = mcq_question(row["question"], [row[letter] for letter in "ABCD"])
        planned.append(
            (row["index"], [{"type": "image", "value": str(image)}, {"type": "text", "value": text}], row["answer"])
        )
    return planned


def run(model_dir: Path, planned, batch_size: int, args) -> tuple[float, list[str], float]:
    from satori.evaluation.vlm_adapter import SatoriVLM

    vlm = SatoriVLM(
        model_dir, system_prompt=system_prompt(REPO_ROOT / "prompt.txt"), append_instruction=True, min_pixels=args.min_pixels,
        max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, batch_size=batch_size,
    )  # fmt: skip
    vlm.plan([(index, message) for index, message, _ in planned])
    vlm.generate(planned[0][1])  # warm-up (kernels, caches), not timed
    vlm.plan([(index, message) for index, message, _ in planned])
    vlm.completions = []
    start = time.perf_counter()
    answers = [vlm.generate(message) for _, message, _ in planned]
    seconds = time.perf_counter() - start
    accuracy = sum(a.strip().startswith(truth) for a, (_, _, truth) in zip(answers, planned)) / len(planned)
    return len(planned) / seconds, [r["completion"] for r in vlm.completions], accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "base")
    parser.add_argument("--random-3b", action="store_true", help="build and use a Qwen2.5-VL-3B-shaped random model")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--min-pixels", type=int, default=3136)
    parser.add_argument("--max-pixels", type=int, default=50176)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_random_3b(Path(tmp) / "model") if args.random_3b else args.model
        if not (model_dir / "config.json").exists():
            raise SystemExit(f"no model at {model_dir}: run `make run` first, or pass --model or --random-3b")
        planned = questions(args.questions, args.seed, Path(tmp))
        single = run(model_dir, planned, 1, args)
        batched = run(model_dir, planned, args.batch_size, args)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (fp32)"
    identical = sum(a == b for a, b in zip(single[1], batched[1]))
    print(f"{args.questions} questions, {args.max_new_tokens} new tokens max, {model_dir.name}, {device}")
    print(f"{'batch':>6} {'samples/s':>10} {'accuracy':>9}")
    print(f"{1:>6} {single[0]:>10.2f} {single[2]:>9.3f}")
    print(f"{args.batch_size:>6} {batched[0]:>10.2f} {batched[2]:>9.3f}")
    print(f"ratio {batched[0] / single[0]:.1f}x; identical completions {identical}/{len(planned)}")


if __name__ == "__main__":
    main()
