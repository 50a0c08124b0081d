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

from satori.evaluation.batched_generation import BatchedGenerator
from satori.evaluation.vlmeval_compat import vlmeval_api

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# What the official SATORI evaluation scored for a completion with no <answer> block: a single space (no answer).
NO_ANSWER = " "


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

    def __init__(self, model_path: Path, *, batch_size: int = 1, answer_extraction: str = "official", **generation):
        """generation: BatchedGenerator's settings (system_prompt, append_instruction, pixel limits, ...);
        answer_extraction: evaluate.answer_extraction (what an instructed completion without <answer> scores)."""
        super().__init__()
        self.generator = BatchedGenerator(model_path, **generation)
        self.batch_size = batch_size
        self.answer_extraction = answer_extraction
        self.completions: list[dict] = []  # one record per answer handed to VLMEvalKit
        self._pending: dict[tuple, list[dict]] = {}  # planned messages not generated yet, in order
        self._index_of: dict[tuple, object] = {}  # planned message -> dataset index
        self._ready: dict[tuple, tuple[str, int]] = {}  # generated, not yet asked: (completion, tokens)

    def plan(self, planned: list[tuple[object, list[dict]]]) -> None:
        """The (index, message) pairs VLMEvalKit is about to ask for, in its order."""
        self._ready.clear()  # answers generated under an earlier plan (or instruction setting) are stale
        self._pending = {message_key(m): m for _, m in planned}
        self._index_of = {message_key(m): index for index, m in planned}

    def _chat(self, message: list[dict]) -> tuple[str, list]:
        return self.generator.chat(message)

    def _generate_batch(self, messages: list[list[dict]]) -> list[tuple[str, int]]:
        return self.generator.generate(messages)

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
        if answer is not None:
            return answer
        # Asked for an <answer> block (the SATORI instruction) and none given: no answer, as the official SATORI
        # evaluation scored it (or, with fallback, the whole text). Not asked (the plain base model): its whole
        # text, as VLMEvalKit scores any model.
        asked = self.generator.append_instruction
        return NO_ANSWER if asked and self.answer_extraction == "official" else completion
