"""Greedy SATORI answers of a Qwen2.5-VL model, several prompts per left-padded batch.

The engine behind the evaluation adapter (satori/evaluation/vlm_adapter.py), with no VLMEvalKit in it, so
the GPU check measures the same batched generation on a machine that carries no VLMEvalKit.
A message is VLMEvalKit's: a list of {"type": "image" | "text", "value": ...} parts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from satori.core.prompt import SATORI_INSTRUCTION


class BatchedGenerator:
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
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.system_prompt = system_prompt
        self.append_instruction = append_instruction
        self.max_new_tokens = max_new_tokens

    def load_image(self, path: str) -> Image.Image:
        """An image resized as the train stage's template resizes it: ms-swift's Qwen2.5-VL template passes
        every image through qwen_vl_utils.fetch_image (smart_resize, then Pillow's resize), and only then
        through the processor, which leaves a size it would pick itself as it is. Resizing in the processor
        instead (transformers' torchvision path) gives the same patch grid but other pixel values."""
        from qwen_vl_utils import fetch_image

        return fetch_image({"image": Image.open(path), "min_pixels": self.min_pixels, "max_pixels": self.max_pixels})

    def chat(self, message: list[dict]) -> tuple[str, list[Image.Image]]:
        """The chat-template text of a message (system prompt first, the SATORI instruction appended) and its images."""
        content, images = [], []
        for part in message:
            if part["type"] == "image":
                images.append(self.load_image(part["value"]))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": part["value"]})
        if self.append_instruction:
            content.append({"type": "text", "text": SATORI_INSTRUCTION})
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": content}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, images

    def inputs(self, messages: list[list[dict]]):
        """The processor's tensors for several messages, left-padded into one batch."""
        prompts = [self.chat(m) for m in messages]
        images = [image for _, row_images in prompts for image in row_images]
        return self.processor(
            text=[text for text, _ in prompts], images=images or None, padding=True, return_tensors="pt"
        ).to(self.device)

    @torch.inference_mode()
    def generate(self, messages: list[list[dict]]) -> list[tuple[str, int]]:
        """Greedy completions of several messages in one left-padded batch: (text, tokens) each."""
        inputs = self.inputs(messages)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        results = []
        for row in new_tokens:
            length = next((i + 1 for i, token in enumerate(row) if token in self.eos_ids), len(row))
            text = self.processor.decode(row[:length], skip_special_tokens=True)
            results.append((text, length))
        return results
