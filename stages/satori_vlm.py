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

from stages.config import SATORI_INSTRUCTION
from stages.vlmeval_compat import vlmeval_api

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str | None:
    """The stripped text inside the first <answer> block, or None when there is none."""
    match = _ANSWER.search(completion)
    return match.group(1).strip() if match else None


class SatoriVLM(vlmeval_api().BaseModel):
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
        device: str = "auto",
    ):
        super().__init__()
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        # bf16 + SDPA on a GPU; fp32 on the CPU, where greedy decoding is then exactly repeatable.
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_path, dtype=dtype, attn_implementation="sdpa"
        ).to(device)
        self.model.eval()
        self.processor = AutoProcessor.from_pretrained(
            model_path, size={"shortest_edge": min_pixels, "longest_edge": max_pixels}
        )
        self.system_prompt = system_prompt
        self.append_instruction = append_instruction
        self.max_new_tokens = max_new_tokens
        self.completions: list[dict] = []

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
    def _generate_text(self, text: str, images: list[Image.Image]) -> str:
        """Greedy completion of one chat prompt."""
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt").to(self.device)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]

    def generate_inner(self, message, dataset=None) -> str:
        completion = self._generate_text(*self._chat(message))
        answer = extract_answer(completion)
        question = " ".join(p["value"] for p in message if p["type"] == "text")
        images_seen = [p["value"] for p in message if p["type"] == "image"]
        self.completions.append(
            {
                "dataset": dataset,
                "images": images_seen,
                "question": question,
                "completion": completion,
                "answer": answer,
            }
        )
        # No <answer> tag: VLMEvalKit scores the raw text, as it would for any model.
        return answer if answer is not None else completion
