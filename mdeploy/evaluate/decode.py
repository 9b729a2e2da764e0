"""Heatmaps -> keypoints, the one decoder the evaluator uses and the generated app code mirrors.

Per channel: optional Gaussian smoothing, argmax, optional sub-pixel refinement (a
quarter cell toward the higher neighbour on each axis), confidence = the heatmap value
at the chosen cell. Cell (x, y) maps to the input point ((x + 0.5) * stride,
(y + 0.5) * stride), i.e. normalized ((x + 0.5) / W, (y + 0.5) / H); the ModelSpec's
affine then maps input points back to the original image, the exact inverse of the
preprocessing.
"""

from __future__ import annotations

import math

import numpy as np

from mdeploy.spec import Affine


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D kernel, radius ceil(3 sigma), normalized to sum 1."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def smooth(heatmaps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [..., H, W, K] heatmaps; borders repeat the edge value."""
    if sigma <= 0:
        return heatmaps
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    out = heatmaps.astype(np.float32)
    for axis in (-3, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def decode(heatmaps: np.ndarray, stride: int, sigma: float = 0.0, subpixel: bool = True) -> np.ndarray:
    """[N, H, W, K] heatmaps -> [N, K, 3] (x, y, confidence) in model-input pixels."""
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim == 3:
        hm = hm[None]
    n, h, w, k = hm.shape
    work = smooth(hm, sigma)
    flat = work.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    ys, xs = idx // w, idx % w
    rows = np.arange(n)[:, None]
    chans = np.arange(k)[None, :]
    conf = hm[rows, ys, xs, chans]
    fx, fy = xs.astype(np.float32), ys.astype(np.float32)
    if subpixel:
        left = work[rows, ys, np.clip(xs - 1, 0, w - 1), chans]
        right = work[rows, ys, np.clip(xs + 1, 0, w - 1), chans]
        up = work[rows, np.clip(ys - 1, 0, h - 1), xs, chans]
        down = work[rows, np.clip(ys + 1, 0, h - 1), xs, chans]
        fx += np.where((xs > 0) & (xs < w - 1), 0.25 * np.sign(right - left), 0.0)
        fy += np.where((ys > 0) & (ys < h - 1), 0.25 * np.sign(down - up), 0.0)
    return np.stack([(fx + 0.5) * stride, (fy + 0.5) * stride, conf], axis=2).astype(np.float32)


def to_source(points: np.ndarray, affine: Affine) -> np.ndarray:
    """[K, 3] input-pixel keypoints -> original-image pixels (confidence kept)."""
    x, y = affine.to_source(points[:, 0], points[:, 1])
    return np.stack([x, y, points[:, 2]], axis=1).astype(np.float32)
