"""The plugin's template: ms-swift's Qwen2.5-VL template with the image ids of the model's tokenizer."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from satori.data import synthetic
from satori.training.swift_cli import QWEN_TEMPLATE, TEMPLATE_PLUGIN, swift_arguments, template_for
from satori.training.swift_template import TOKENIZER_IDS_TEMPLATE
from satori.data.tiny_model import build_tiny_model


def compact_model(folder: Path) -> Path:
    build_tiny_model(folder, seed=0, hidden_size=32, num_layers=1, bpe_vocab_size=400, min_pixels=3136,
                     max_pixels=50176, corpus=synthetic.tokenizer_corpus("SYS", rows=20), compact_vocab=True)  # fmt: skip
    return folder


def test_ms_swift_encodes_a_compact_model_s_image_with_its_own_image_id(tmp_path, swift_pixel_limits):
    from swift.model import get_processor
    from swift.template import get_template

    from satori.training import swift_template  # noqa: F401  registers the template, as --external_plugins does

    swift_pixel_limits(3136, 50176)  # as the train stage sets them (vision)
    model = compact_model(tmp_path / "m")
    processor = get_processor(str(model), model_type="qwen2_5_vl")
    template = get_template(processor, template_type=TOKENIZER_IDS_TEMPLATE)
    row = {"messages": [{"role": "user", "content": "<image>Q?"}, {"role": "assistant", "content": "A"}],
           "images": [Image.new("RGB", (448, 224), "white")]}  # fmt: skip
    encoded = template.encode(row)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_pad < 1000  # compact: not Qwen's 151655
    # 448x224 over 50,176 pixels: resized to 308x140, 22x10 patches, 11x5 = 55 image tokens after the 2x2 merge.
    assert encoded["image_grid_thw"].tolist() == [[1, 10, 22]]
    assert sum(token == image_pad for token in encoded["input_ids"]) == 55
    assert max(encoded["input_ids"]) < processor.model_info.config.text_config.vocab_size


def test_the_template_follows_the_model_s_ids(tiny_model_dir, tmp_path):
    from satori.core.config import TrainParams, load_profile
    from satori.core.config import REPO_ROOT

    assert template_for(tiny_model_dir) == QWEN_TEMPLATE  # Qwen's ids: ms-swift's own template, no plugin
    compact = compact_model(tmp_path / "m")
    assert template_for(compact) == TOKENIZER_IDS_TEMPLATE
    params: TrainParams = load_profile(REPO_ROOT / "params.yaml")[1].train
    paths = dict(train_file=Path("t"), val_file=Path("v"), output_dir=Path("o"), prompt_file=Path("p"), cuda=False)
    argv = swift_arguments(params, model_dir=compact, **paths)
    assert argv[argv.index("--template") + 1] == TOKENIZER_IDS_TEMPLATE
    assert str(TEMPLATE_PLUGIN) in argv[argv.index("--external_plugins") + 1 : argv.index("--reward_funcs")]
    argv = swift_arguments(params, model_dir=tiny_model_dir, **paths)
    assert argv[argv.index("--template") + 1] == QWEN_TEMPLATE and str(TEMPLATE_PLUGIN) not in argv
