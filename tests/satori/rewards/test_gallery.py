"""The pictures put the predicted and the true boxes where they are in the image."""

from __future__ import annotations

from PIL import Image

from satori.rewards.gallery import PREDICTED_COLOR, TILE, TRUE_COLOR, Sample, draw, grid


def test_boxes_are_drawn_where_they_are_in_original_pixels():
    # 448x224 is seen by the model as 448x224 under these limits; a predicted box in seen pixels maps 1:1.
    image = Image.new("RGB", (448, 224), (255, 255, 255))
    completion = "<caption>a red square</caption> <bbox>[[224,0,448,112]]</bbox> <answer>B</answer>"
    tile = draw(Sample(image, completion, [[0, 112, 224, 224]], 3136, 200704, "correct: B"))
    scale = TILE / 448  # the image is fitted into the tile, centred vertically
    top = (TILE - round(224 * scale)) / 2

    def pixel(x, y):
        return tile.getpixel((round(x * scale), round(top + y * scale)))

    assert pixel(336, 0) == PREDICTED_COLOR  # the top edge of the predicted box
    assert pixel(112, 223) == TRUE_COLOR or pixel(112, 222) == TRUE_COLOR  # the bottom edge of the true box
    assert pixel(112, 56) == (255, 255, 255)  # inside neither box: untouched
    assert tile.size[0] == TILE and tile.size[1] > TILE  # the text panel below


def test_predicted_boxes_are_mapped_back_from_the_resized_image():
    # 896x448 is resized to fit max_pixels=200704: the model's x is a fraction of the original's.
    image = Image.new("RGB", (896, 448), (255, 255, 255))
    completion = "<caption>c</caption> <bbox>[[0,0,112,112]]</bbox> <answer>A</answer>"
    tile = draw(Sample(image, completion, [], 3136, 200704))
    scale = TILE / 896
    top = (TILE - round(448 * scale)) / 2
    seen_w = 616  # 896x448 at most 200,704 pixels, sides multiples of 28: seen as 616x308 (616 * 308 = 189,728)
    right_edge_in_original = 112 * 896 / seen_w
    assert tile.getpixel((round(right_edge_in_original * scale) - 1, round(top + 50 * scale))) == PREDICTED_COLOR


def test_a_grid_holds_every_tile():
    tiles = [Image.new("RGB", (10, 20), (i, i, i)) for i in range(6)]
    sheet = grid(tiles, columns=4)
    assert sheet.size == (40, 40)
    assert sheet.getpixel((15, 25)) == (5, 5, 5)  # the sixth tile, second row, second column


def test_a_box_past_the_image_is_clipped_to_the_picture_never_drawn_over_the_text():
    # A 448x224 image shown 256 wide (TILE), 128 high, centred: rows 64..191 of the tile. A box far past its edges.
    image = Image.new("RGB", (448, 224), (255, 255, 255))
    completion = "<caption>c</caption> <bbox>[[-900,-900,5000,5000]]</bbox> <answer>A</answer>"
    tile = draw(Sample(image, completion, [], 3136, 200704))
    top, bottom = (TILE - 128) // 2, (TILE - 128) // 2 + 127
    assert tile.getpixel((0, top)) == PREDICTED_COLOR and tile.getpixel((TILE - 1, bottom)) == PREDICTED_COLOR
    assert tile.getpixel((TILE // 2, top - 1)) == (255, 255, 255)  # above the picture: the tile's white
    text_area = tile.crop((0, TILE, TILE, tile.height))
    assert PREDICTED_COLOR not in {color for _, color in text_area.getcolors(1 << 16)}
