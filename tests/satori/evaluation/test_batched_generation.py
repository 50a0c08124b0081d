"""The evaluation sees images as training saw them: the same pixels, to the bit, as ms-swift's template."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

SIZES = [(20, 30), (200, 150), (640, 480), (1000, 40), (40, 900)]  # below min_pixels, between, above max, extremes


@pytest.mark.parametrize("limits", [(3136, 50176), (12544, 25088)])
def test_evaluation_pixels_equal_ms_swift_s_template_encoding(tiny_model_dir, tmp_path, swift_pixel_limits, limits):
    from swift.model import get_processor
    from swift.template import get_template

    from satori.evaluation.batched_generation import BatchedGenerator
    from satori.training.swift_cli import QWEN_TEMPLATE

    min_pixels, max_pixels = limits
    swift_pixel_limits(min_pixels, max_pixels)
    template = get_template(get_processor(str(tiny_model_dir), model_type="qwen2_5_vl"), template_type=QWEN_TEMPLATE)
    generator = BatchedGenerator(tiny_model_dir, system_prompt="S", append_instruction=False, min_pixels=min_pixels,
                                 max_pixels=max_pixels, max_new_tokens=1, device="cpu")  # fmt: skip
    noise = np.random.default_rng(0)
    grids = []
    for width, height in SIZES:
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(noise.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        trained = template.encode({"messages": [{"role": "user", "content": "<image>Q?"}], "images": [str(path)]})
        evaluated = generator.inputs([[{"type": "image", "value": str(path)}, {"type": "text", "value": "Q?"}]])
        assert evaluated["image_grid_thw"].tolist() == trained["image_grid_thw"].tolist(), (width, height)
        assert torch.equal(evaluated["pixel_values"], trained["pixel_values"]), (width, height)
        grids.append(trained["image_grid_thw"].tolist()[0])
    pixels = [14 * 14 * h * w for _, h, w in grids]
    assert all(min_pixels <= p <= max_pixels for p in pixels)  # every size was brought within the limits
