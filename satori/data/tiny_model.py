"""Build the embedded default model: a tiny, randomly initialised Qwen2.5-VL.

It has the real architecture (vision tower, merger, M-RoPE text decoder), Qwen's special tokens
and a real Qwen2 BPE tokenizer, so transformers, ms-swift and the VLMEvalKit adapter load it as
they load Qwen/Qwen2.5-VL-3B-Instruct. Only the sizes are small. Its vocabulary is either Qwen's
layout (`vocab: qwen`: the specials at Qwen's ids, 151,936 rows, what ms-swift's `qwen2_5_vl`
template hard-codes; the rehearsal's models) or compact (`vocab: compact`: the specials right
after the BPE tokens, ~1,000 rows, trained with satori.training.swift_template; the embedded default),
which makes a CPU training step several times cheaper (README: Does it learn?).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers


# ms-swift's qwen2_5_vl template hard-codes image_token_id = 151655, so the
# tokenizer must place Qwen's special tokens at Qwen's ids (FACTS.md).
FIRST_SPECIAL_ID = 151643
SPECIAL_TOKENS = [
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",  # 151646
    "<|object_ref_end|>",  # 151647
    "<|box_start|>",  # 151648
    "<|box_end|>",  # 151649
    "<|quad_start|>",  # 151650
    "<|quad_end|>",  # 151651
    "<|vision_start|>",  # 151652
    "<|vision_end|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
]
MEDIA_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
VOCAB_SIZE = 151936  # Qwen2.5-VL's embedding rows (ids above the specials stay unused)

# Qwen2-VL's chat format: a default system turn, images as
# <|vision_start|><|image_pad|><|vision_end|>, an open assistant turn to generate.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _tokenizer_corpus(extra_texts: list[str]) -> list[str]:
    tags = "<caption> </caption> <bbox> </bbox> <answer> </answer> [[0,0,10,10],[20,20,30,30]]"
    return [tags, *extra_texts] * 4


def build_tokenizer(corpus: list[str], bpe_vocab_size: int, compact: bool = False):
    """A Qwen2Tokenizer with a locally trained byte-level BPE and Qwen's special tokens, at Qwen's ids or,
    compact, right after the BPE tokens."""
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(corpus), trainer=trainer)
    vocab: dict[str, int] = dict(sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]))
    first_special = len(vocab) if compact else FIRST_SPECIAL_ID
    # Reserved, unreachable entries fill the id range below Qwen's first special token.
    for filler_id in range(len(vocab), first_special):
        vocab[f"<|reserved_{filler_id}|>"] = filler_id
    # The specials sit in the vocab at their fixed ids; the tokenizer then marks them special.
    for offset, token in enumerate(SPECIAL_TOKENS):
        vocab[token] = first_special + offset
    merges = _merges_of(bpe)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    expected = list(range(first_special, first_special + len(SPECIAL_TOKENS)))
    if ids != expected:
        raise RuntimeError(f"special tokens landed at {ids}, expected {expected}")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _merges_of(trained: Tokenizer) -> list[tuple[str, str]]:
    """The merge list of a trained tokenizers BPE, read back through its JSON form."""
    merges = json.loads(trained.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def special_id(tokenizer, token: str) -> int:
    """A special token's id in tokenizer (None: Qwen's layout)."""
    if tokenizer is None:
        return FIRST_SPECIAL_ID + SPECIAL_TOKENS.index(token)
    return tokenizer.convert_tokens_to_ids(token)


def vocab_rows(tokenizer) -> int:
    """Embedding rows: Qwen2.5-VL's 151,936 for Qwen's ids; else every token, rounded up to a multiple of 64."""
    if special_id(tokenizer, SPECIAL_TOKENS[0]) == FIRST_SPECIAL_ID:
        return VOCAB_SIZE
    return -(-len(tokenizer.get_vocab()) // 64) * 64


def build_config(hidden_size: int, num_layers: int, tokenizer=None):
    """A tiny Qwen2.5-VL config with the token ids of tokenizer (None: Qwen's)."""
    from transformers import Qwen2_5_VLConfig

    first_special = special_id(tokenizer, SPECIAL_TOKENS[0])

    heads = 2
    head_dim = hidden_size // heads
    # M-RoPE splits head_dim/2 frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    text_config = dict(
        vocab_size=vocab_rows(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        bos_token_id=first_special,
        eos_token_id=special_id(tokenizer, "<|im_end|>"),
        pad_token_id=first_special,
        tie_word_embeddings=True,
    )
    vision_config = dict(
        depth=num_layers,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_heads=heads,
        out_hidden_size=hidden_size,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[num_layers - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=True,
        image_token_id=special_id(tokenizer, "<|image_pad|>"),
        video_token_id=special_id(tokenizer, "<|video_pad|>"),
        vision_start_token_id=special_id(tokenizer, "<|vision_start|>"),
        vision_end_token_id=special_id(tokenizer, "<|vision_end|>"),
    )


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int,
    hidden_size: int,
    num_layers: int,
    bpe_vocab_size: int,
    min_pixels: int,
    max_pixels: int,
    corpus: list[str],
    compact_vocab: bool = False,
    system_prompt: str = "",
    warmup_examples: list | None = None,
    warmup_steps: int = 0,
    warmup_batch_size: int = 8,
    warmup_lr: float = 3e-3,
    warmup_trains_merger: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[float]:
    """Write a loadable tiny Qwen2.5-VL checkpoint (weights, config, tokenizer, processor) to out_dir.

    With warmup_examples, the random model is first taught the SATORI answer
    format (see warm_start), so that like a real instruct model it answers in
    the format some of the time and GRPO's rewards differ between completions.
    Returns the warm-start losses.
    """
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    random.seed(seed)
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus, bpe_vocab_size, compact=compact_vocab)
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=CHAT_TEMPLATE,
    )
    model = Qwen2_5_VLForConditionalGeneration(build_config(hidden_size, num_layers, tokenizer)).to(torch.float32)
    losses = []
    if warmup_examples and warmup_steps:
        losses = warm_start(
            model,
            processor,
            warmup_examples,
            system=system_prompt,
            steps=warmup_steps,
            batch_size=warmup_batch_size,
            lr=warmup_lr,
            seed=seed,
            trains_merger=warmup_trains_merger,
            progress=progress,
        )
    processor.tokenizer.padding_side = "left"  # what batched generation wants
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = [special_id(tokenizer, "<|im_end|>"), special_id(tokenizer, "<|endoftext|>")]
    model.generation_config.pad_token_id = special_id(tokenizer, "<|endoftext|>")
    # Never sampled: a media token in a completion has no image behind it, and the training forward pass over
    # prompt + completion then fails ("Number of elements of source < number of ones in mask"). An untrained
    # model over a compact vocabulary draws one every few hundred tokens.
    model.generation_config.suppress_tokens = [special_id(tokenizer, token) for token in MEDIA_TOKENS]
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return losses


def _train_ids(tokenizer) -> torch.Tensor:
    """Token ids the tiny model can emit: the trained BPE vocabulary and Qwen's special tokens."""
    return torch.tensor(sorted(i for t, i in tokenizer.get_vocab().items() if not t.startswith("<|reserved_")))


@torch.enable_grad()  # `import vlmeval` switches autograd off process-wide
def warm_start(
    model,
    processor,
    examples,
    *,
    system: str,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    trains_merger: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[float]:
    """Teach the random model the SATORI answer format by teacher forcing; returns the loss per step.

    Only ~1k of the embedding rows (151,936 in Qwen's layout) are real tokens. The others are set
    to zero and stay zero (never an input, no weight decay), so their logits are
    all 0 and their total probability is exactly N * e^0 / Z: the softmax below
    is exact with those N rows folded into one class of logit log(N), at a
    thousandth of the cost of Qwen's full vocabulary.
    """
    generator = torch.Generator().manual_seed(seed)
    live = _train_ids(processor.tokenizer)
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        keep = torch.zeros(embed.shape[0], dtype=torch.bool)
        keep[live] = True
        embed[~keep] = 0.0
    unused = embed.shape[0] - len(live)
    folded_logit = math.log(unused) if unused else -math.inf
    position_of = torch.full((embed.shape[0],), -1, dtype=torch.long)
    position_of[live] = torch.arange(len(live))

    # The vision tower keeps its random initialisation, which already separates colours. Trained at the
    # warm-up's learning rate, Adam's steps on its weak, noisy gradients grew its weights ~30x and folded
    # red, green and yellow onto one direction (feature cosine 0.999, measured), blinding the model.
    model.model.visual.requires_grad_(False)
    model.model.visual.merger.requires_grad_(trains_merger)
    # fused: one kernel for all tensors; the unfused CPU loop spent a quarter of each step on the
    # 152k-row embedding table (measured with cProfile).
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0, fused=True)
    losses = []
    encoded: dict[int, dict] = {}  # example -> its processor output and prompt length: each is encoded once
    model.train()
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        for i in picks:
            if i not in encoded:
                encoded[i] = _encode_example(processor, system, examples[i])
        inputs, prompt_lens = _collate([encoded[i] for i in picks], processor.tokenizer.pad_token_id)
        labels = inputs["input_ids"].clone()
        labels[inputs["attention_mask"] == 0] = -100
        for row, n in enumerate(prompt_lens):
            labels[row, :n] = -100
        hidden = model.model(**inputs).last_hidden_state
        # Position t predicts token t+1.
        targets = labels[:, 1:]
        chosen = targets != -100
        h = hidden[:, :-1][chosen]
        logits = h @ embed[live].T
        logits = torch.cat([logits, torch.full((len(h), 1), folded_logit)], dim=1)
        loss = torch.nn.functional.cross_entropy(logits, position_of[targets[chosen]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress and (len(losses) % 20 == 0 or len(losses) == steps):
            progress(f"warm-up step {len(losses)}/{steps}: loss {losses[-1]:.3f}")
    model.eval()
    return losses


def _encode_example(processor, system: str, example) -> dict:
    """One warm-up example as the processor encodes it (batch of one), with its prompt's length in tokens."""
    image, text, target = example
    prompt = _chat_prompt(processor, system, text)
    # A target that stops at "<answer>" teaches the caption and boxes only (see synthetic.warmup_examples).
    full = prompt + target + ("" if target.endswith("<answer>") else "<|im_end|>")
    return {
        "inputs": dict(processor(text=[full], images=[image], return_tensors="pt")),
        "prompt_len": len(processor(text=[prompt], images=[image]).input_ids[0]),
    }


def _collate(items: list[dict], pad_id: int) -> tuple[dict, list[int]]:
    """Examples encoded one by one, batched as the processor batches them with right padding: per-token
    tensors padded to the longest (input_ids with pad_id, the rest with 0), image tensors concatenated."""
    longest = max(item["inputs"]["input_ids"].shape[1] for item in items)
    batch = {}
    for key, first in items[0]["inputs"].items():
        values = [item["inputs"][key] for item in items]
        if first.dim() == 2 and first.shape == items[0]["inputs"]["input_ids"].shape and key != "image_grid_thw":
            fill = pad_id if key == "input_ids" else 0
            values = [torch.nn.functional.pad(v, (0, longest - v.shape[1]), value=fill) for v in values]
        batch[key] = torch.cat(values)
    return batch, [item["prompt_len"] for item in items]


def _chat_prompt(processor, system: str, user_text: str) -> str:
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]},
    ]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_embedded_base_model(
    out_dir: Path, params, vision, system_prompt: str, *, warm_up: bool = True, progress: Callable[[str], None] | None = None
) -> list[float]:
    """The embedded default's base model from its params (base_model.tiny, vision): tokenizer trained on the
    synthetic corpus, then, with warm_up, taught the SATORI format on synthetic examples. Returns the losses."""
    from satori.data import synthetic

    examples = None
    if warm_up:
        examples = synthetic.warmup_examples(
            params.warmup_examples, params.seed, vision.seen_size, params.warmup_cue_share, params.warmup_cue_answered,
            params.warmup_cue_unanswered,
        )
    return build_tiny_model(
        out_dir,
        seed=params.seed,
        hidden_size=params.hidden_size,
        num_layers=params.num_layers,
        bpe_vocab_size=params.bpe_vocab_size,
        min_pixels=vision.min_pixels,
        max_pixels=vision.max_pixels,
        corpus=synthetic.tokenizer_corpus(system_prompt),
        compact_vocab=params.vocab == "compact",
        system_prompt=system_prompt,
        warmup_examples=examples,
        warmup_steps=params.warmup_steps if warm_up else 0,
        warmup_batch_size=params.warmup_batch_size,
        warmup_lr=params.warmup_lr,
        warmup_trains_merger=params.warmup_trains_merger,
        progress=progress,
    )
