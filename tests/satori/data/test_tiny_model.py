from __future__ import annotations

import torch
from PIL import Image

from satori.data import synthetic
from satori.core.config import REPO_ROOT
from satori.data.tiny_model import FIRST_SPECIAL_ID, SPECIAL_TOKENS, VOCAB_SIZE, warm_start


def test_special_tokens_sit_at_qwen_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert ids == list(range(FIRST_SPECIAL_ID, FIRST_SPECIAL_ID + len(SPECIAL_TOKENS)))
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655  # ms-swift's qwen2_5_vl template hard-codes it
    text = "<caption>A red circle.</caption> <bbox>[[1,2,30,40]]</bbox>"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_config_is_qwen2_5_vl_shaped(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "qwen2_5_vl"
    assert config.text_config.vocab_size == VOCAB_SIZE
    assert (config.image_token_id, config.vision_start_token_id) == (151655, 151652)


def test_chat_template_is_qwen_format(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_loads_and_generates_with_an_image(tiny_model_dir):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image = Image.new("RGB", (448, 224), "white")
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    # 448x224 = 100,352 pixels, over max_pixels 50,176: resized to 308x140, 11x5 = 55 image tokens.
    assert int((inputs["input_ids"] == 151655).sum()) == 55
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 5


def test_warm_start_lowers_the_loss_and_keeps_unused_rows_zero(tiny_model_dir):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    examples = synthetic.warmup_examples(16, 0, lambda w, h: (w, h))
    system = (REPO_ROOT / "prompt.txt").read_text()
    losses = warm_start(model, processor, examples, system=system, steps=25, batch_size=4, lr=1e-2, seed=0)
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    embed = model.get_input_embeddings().weight
    assert torch.count_nonzero(embed[FIRST_SPECIAL_ID - 10 : FIRST_SPECIAL_ID]) == 0
    assert torch.count_nonzero(embed[VOCAB_SIZE - 10 :]) == 0


def test_a_compact_vocabulary_puts_the_specials_after_the_bpe_tokens_and_the_config_follows(tmp_path):
    from transformers import AutoConfig, AutoProcessor

    from satori.data.tiny_model import build_tiny_model

    build_tiny_model(tmp_path, seed=0, hidden_size=32, num_layers=1, bpe_vocab_size=400, min_pixels=3136,
                     max_pixels=50176, corpus=synthetic.tokenizer_corpus("SYS", rows=20), compact_vocab=True)  # fmt: skip
    processor = AutoProcessor.from_pretrained(tmp_path)
    tokenizer, config = processor.tokenizer, AutoConfig.from_pretrained(tmp_path)
    bpe = [i for t, i in tokenizer.get_vocab().items() if t not in SPECIAL_TOKENS]
    first = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0])
    assert sorted(bpe) == list(range(first))  # no reserved fillers: the BPE tokens, then the specials
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(first, first + len(SPECIAL_TOKENS)))
    assert config.text_config.vocab_size == -(-(first + len(SPECIAL_TOKENS)) // 64) * 64 < 1000
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (config.image_token_id, config.video_token_id) == (image_pad, image_pad + 1)
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (448, 224), "white")], return_tensors="pt")
    assert int((inputs["input_ids"] == image_pad).sum()) == 55  # as with Qwen's ids (above)


def test_warm_up_batches_equal_the_processor_s_own_batches(tiny_model_dir):
    """Each example is encoded once and batched by padding; the batch is the processor's, token for token."""
    from transformers import AutoProcessor

    from satori.data.tiny_model import _chat_prompt, _collate, _encode_example

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    examples = synthetic.warmup_examples(6, 0, lambda w, h: (w, h), cue_share=0.5, cue_answered=0.5)
    batch, prompt_lens = _collate([_encode_example(processor, "SYS", e) for e in examples], processor.tokenizer.pad_token_id)
    prompts = [_chat_prompt(processor, "SYS", text) for _, text, _ in examples]
    full = [p + t + ("" if t.endswith("<answer>") else "<|im_end|>") for p, (_, _, t) in zip(prompts, examples)]
    processor.tokenizer.padding_side = "right"
    expected = processor(text=full, images=[image for image, _, _ in examples], padding=True, return_tensors="pt")
    assert set(batch) == set(expected)
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
    assert prompt_lens == [len(processor(text=[p], images=[e[0]]).input_ids[0]) for p, e in zip(prompts, examples)]
    assert len(set(prompt_lens)) > 1 and (batch["attention_mask"] == 0).any()  # the padding was exercised


def test_the_model_never_samples_a_media_token(tmp_path):
    """An untrained model samples from every token; a media token in a completion breaks the training forward."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from satori.data.tiny_model import MEDIA_TOKENS, build_tiny_model

    build_tiny_model(tmp_path, seed=0, hidden_size=32, num_layers=1, bpe_vocab_size=300, min_pixels=3136,
                     max_pixels=50176, corpus=synthetic.tokenizer_corpus("SYS", rows=5), compact_vocab=True)  # fmt: skip
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    media = set(processor.tokenizer.convert_tokens_to_ids(MEDIA_TOKENS))
    assert set(model.generation_config.suppress_tokens) == media
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text] * 8, images=[Image.new("RGB", (56, 56), "red")] * 8, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=200, do_sample=True, temperature=1.0, min_new_tokens=200)
    sampled = out[:, inputs["input_ids"].shape[1] :]
    assert sampled.numel() == 8 * 200 and not media & set(sampled.flatten().tolist())
