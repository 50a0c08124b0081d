"""The SATORI model adapter for VLMEvalKit: one class for base and trained models.

VLMEvalKit's own Qwen2VLChat needs a GPU, adds no system prompt and scores
the whole completion. This adapter puts prompt.txt first, optionally appends
the official evaluation's per-question instruction, decodes greedily and
hands VLMEvalKit only the text inside <answer>...</answer>; the raw
completions are kept so captions and boxes can be read afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image

from satori.config import SATORI_INSTRUCTION
from satori.vlmeval_compat import vlmeval_api

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str | None:
    """The stripped text inside the first <answer> block, or None when there is none."""
    match = _ANSWER.search(completion)
    return match.group(1).strip() if match else None


def message_key(message: list[dict]) -> tuple:
    """A VLMEvalKit message as a hashable key (its images and texts, in order)."""
    return tuple((part["type"], str(part["value"])) for part in message)


class SatoriVLM(vlmeval_api().BaseModel):
    """VLMEvalKit model adapter for SATORI-format models (base and trained alike).

    VLMEvalKit asks for one answer at a time. Given the questions to come (`plan`), the adapter
    answers them `batch_size` at a time with left-padded batched generation and hands VLMEvalKit
    each answer when it asks, so VLMEvalKit's own loop (sharding across ranks, resume files,
    merging on rank 0) runs unchanged.
    """

    INTERLEAVE = False

    def __init__(
        self,
        model_path: Path,
        *,
        system_prompt: str,
        append_instruction: bool,
        min_pixels: int,
        max_pixels: int,
        max_new_tokens: int,
        batch_size: int = 1,
        device: str = "auto",
    ):
        super().__init__()
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        # bf16 + SDPA on a GPU; fp32 on the CPU, where greedy decoding is then exactly repeatable.
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_path, dtype=dtype, attn_implementation="sdpa"
        ).to(device)
        self.model.eval()
        self.processor = AutoProcessor.from_pretrained(
            model_path, size={"shortest_edge": min_pixels, "longest_edge": max_pixels}
        )
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.eos_ids = set(self.model.generation_config.eos_token_id or [])
        if isinstance(self.model.generation_config.eos_token_id, int):
            self.eos_ids = {self.model.generation_config.eos_token_id}
        self.system_prompt = system_prompt
        self.append_instruction = append_instruction
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.completions: list[dict] = []  # one record per answer handed to VLMEvalKit
        self._pending: dict[tuple, list[dict]] = {}  # planned messages not generated yet, in order
        self._index_of: dict[tuple, object] = {}  # planned message -> dataset index
        self._ready: dict[tuple, tuple[str, int]] = {}  # generated, not yet asked: (completion, tokens)

    def plan(self, planned: list[tuple[object, list[dict]]]) -> None:
        """The (index, message) pairs VLMEvalKit is about to ask for, in its order."""
        self._ready.clear()  # answers generated under an earlier plan (or instruction setting) are stale
        self._pending = {message_key(m): m for _, m in planned}
        self._index_of = {message_key(m): index for index, m in planned}

    def _chat(self, message: list[dict]) -> tuple[str, list[Image.Image]]:
        content, images = [], []
        for part in message:
            if part["type"] == "image":
                images.append(Image.open(part["value"]).convert("RGB"))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": part["value"]})
        if self.append_instruction:
            content.append({"type": "text", "text": SATORI_INSTRUCTION})
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": content}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, images

    @torch.inference_mode()
    def _generate_batch(self, messages: list[list[dict]]) -> list[tuple[str, int]]:
        """Greedy completions of several chat prompts in one left-padded batch: (text, tokens) each."""
        prompts = [self._chat(m) for m in messages]
        images = [image for _, row_images in prompts for image in row_images]
        inputs = self.processor(
            text=[text for text, _ in prompts], images=images or None, padding=True, return_tensors="pt"
        ).to(self.device)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        results = []
        for row in new_tokens:
            length = next((i + 1 for i, token in enumerate(row) if token in self.eos_ids), len(row))
            text = self.processor.decode(row[:length], skip_special_tokens=True)
            results.append((text, length))
        return results

    def generate_inner(self, message, dataset=None) -> str:
        key = message_key(message)
        if key not in self._ready:
            self._pending.pop(key, None)
            batch = [message]
            while self._pending and len(batch) < self.batch_size:
                batch.append(self._pending.pop(next(iter(self._pending))))
            for m, result in zip(batch, self._generate_batch(batch)):
                self._ready[message_key(m)] = result
        completion, tokens = self._ready.pop(key)
        answer = extract_answer(completion)
        self.completions.append(
            {
                "dataset": dataset,
                "index": self._index_of.get(key),
                "images": [p["value"] for p in message if p["type"] == "image"],
                "question": " ".join(p["value"] for p in message if p["type"] == "text"),
                "completion": completion,
                "completion_tokens": tokens,
                "answer": answer,
            }
        )
        # No <answer> tag: VLMEvalKit scores the raw text, as it would for any model.
        return answer if answer is not None else completion
