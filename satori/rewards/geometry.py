"""Box geometry of the bbox reward: exact areas of unions of boxes (coordinate compression, no polygons),
IoU, and the checks a width, height or coordinate passes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from satori.rewards.completion import is_number


def union_areas_batch(
    pairs: list[tuple[list[tuple], list[tuple]]],
    *,
    scales: list[tuple[float, float]] | None = None,
    clip_to: list[tuple[float, float]] | None = None,
    order_corners: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(area of ∪P ∩ ∪T, area of ∪P ∪ ∪T) for each (P, T) pair of axis-aligned box lists.

    Exact coordinate compression, vectorized over the batch: the distinct x and y coordinates of a
    pair cut the plane into cells; a cell is covered by a set when its centre lies in one of the
    set's boxes; the areas are sums of covered cells. Pairs with the same box counts are computed
    together. A box with x2 <= x1 or y2 <= y1 covers no cell.

    Applied to P first, per pair: `scales` (sx, sy) multiply its coordinates, `clip_to` (w, h)
    clips them to the image; `order_corners` sorts the corners of P and T boxes (shapely's view).
    """
    inter = np.zeros(len(pairs))
    union = np.zeros(len(pairs))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (pred, truth) in enumerate(pairs):
        groups.setdefault((len(pred), len(truth)), []).append(i)
    for (n_pred, n_truth), rows in groups.items():
        pred = np.array([v for i in rows for box in pairs[i][0] for v in box], dtype=np.float64)
        truth = np.array([v for i in rows for box in pairs[i][1] for v in box], dtype=np.float64)
        pred, truth = pred.reshape(len(rows), n_pred, 4), truth.reshape(len(rows), n_truth, 4)
        if scales is not None:
            pred = pred * np.array([scales[i] for i in rows])[:, None, [0, 1, 0, 1]]
        if clip_to is not None:
            limits = np.array([clip_to[i] for i in rows])[:, None, [0, 1, 0, 1]]
            pred = np.clip(pred, 0.0, limits)
        boxes = np.concatenate([pred, truth], axis=1)  # (B, K, 4)
        if order_corners:
            boxes = np.concatenate(
                [np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])], axis=2
            )
        xs = np.sort(np.concatenate([boxes[:, :, 0], boxes[:, :, 2]], axis=1), axis=1)  # (B, 2K)
        ys = np.sort(np.concatenate([boxes[:, :, 1], boxes[:, :, 3]], axis=1), axis=1)
        cx, cy = (xs[:, :-1] + xs[:, 1:]) / 2, (ys[:, :-1] + ys[:, 1:]) / 2
        in_x = (boxes[:, :, 0, None] <= cx[:, None, :]) & (cx[:, None, :] < boxes[:, :, 2, None])  # (B, K, X)
        in_y = (boxes[:, :, 1, None] <= cy[:, None, :]) & (cy[:, None, :] < boxes[:, :, 3, None])  # (B, K, Y)
        # A cell (x, y) is covered by a set when some box of it spans both: a boolean matrix product.
        in_x, in_y = in_x.astype(np.float32), in_y.astype(np.float32)
        by_pred = np.matmul(in_x[:, :n_pred].transpose(0, 2, 1), in_y[:, :n_pred]) > 0  # (B, X, Y)
        by_truth = np.matmul(in_x[:, n_pred:].transpose(0, 2, 1), in_y[:, n_pred:]) > 0
        cell = np.diff(xs, axis=1)[:, :, None] * np.diff(ys, axis=1)[:, None, :]
        inter[rows] = (cell * (by_pred & by_truth)).sum(axis=(1, 2))
        union[rows] = (cell * (by_pred | by_truth)).sum(axis=(1, 2))
    return inter, union


def union_areas(pred: list[tuple], truth: list[tuple]) -> tuple[float, float]:
    """union_areas_batch for one pair."""
    inter, union = union_areas_batch([(pred, truth)])
    return float(inter[0]), float(union[0])


def iou(inter: float, union: float) -> float:
    value = inter / (union + 1e-6)  # the published denominator
    return value if math.isfinite(value) and 0.0 <= value else 0.0


def positive_int(value: Any) -> int | None:
    """A width or height: a positive whole number (int or float), else None."""
    if type(value) is int:
        return value if value > 0 else None
    if not is_number(value):
        return None
    try:
        if not math.isfinite(value) or value <= 0 or value != int(value):
            return None
    except OverflowError:  # an int beyond float range
        return None
    return int(value)
