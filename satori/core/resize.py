"""How Qwen2.5-VL's processor resizes an image: qwen_vl_utils.smart_resize, in one place.

ms-swift's training template resizes with it; the rewards map boxes back through it; preprocessing
rejects what it refuses; the galleries draw in its coordinates.
"""

from __future__ import annotations

import functools

# Qwen2.5-VL: 14-pixel patches merged 2x2, so one image token per 28x28 pixels.
IMAGE_FACTOR = 28


@functools.lru_cache(maxsize=65536)
def seen_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) the processor resizes an image to; None where it cannot (qwen-vl-utils refuses the
    aspect ratio, or a side would floor to 0 pixels)."""
    from qwen_vl_utils import smart_resize

    try:
        seen_h, seen_w = smart_resize(height, width, IMAGE_FACTOR, min_pixels, max_pixels)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return (seen_w, seen_h) if seen_w > 0 and seen_h > 0 else None
