from __future__ import annotations

import torch
from PIL import Image

from satori import synthetic
from satori.config import REPO_ROOT
from satori.tiny_model import FIRST_SPECIAL_ID, SPECIAL_TOKENS, VOCAB_SIZE, warm_start


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
