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


def separable_blur(heatmaps: np.ndarray, kernel: np.ndarray, mode: str, dtype=np.float32) -> np.ndarray:
    """Blur [..., H, W, K] maps over H and W with the 1-D `kernel`, in `dtype`.

    `mode` is numpy.pad's border rule: "edge" repeats the border value, "symmetric" reflects
    including it (scipy's "reflect"), "reflect" reflects without it (OpenCV's REFLECT_101).
    """
    r = len(kernel) // 2
    out = np.asarray(heatmaps, dtype)
    for axis in (-3, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode=mode)
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(kernel):
            acc += dtype(w) * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def smooth(heatmaps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [..., H, W, K] heatmaps; borders repeat the edge value."""
    if sigma <= 0:
        return heatmaps
    return separable_blur(heatmaps, gaussian_kernel(sigma), "edge")


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


# OpenCV's GaussianBlur with a 5x5 kernel and sigma 0 (its fixed small-kernel table).
BINOMIAL5 = np.array([0.0625, 0.25, 0.375, 0.25, 0.0625], np.float32)
PEFM_MIN_PEAK = 0.01


def decode_pefm_android(heatmaps: np.ndarray, stride: int) -> np.ndarray:
    """[N, H, W, K] -> [N, K, 3] by the PoseEstimationForMobile Android demo's rules.

    Each channel is blurred with OpenCV's 5x5 Gaussian (sigma 0: taps 1 4 6 4 1 / 16, borders
    reflected without repeating the edge), a joint is the highest cell that is strictly above
    its four neighbours (outside the map counts as -1) and at least 0.01, and cell (x, y) is
    the input point (x * stride, y * stride): the cell's corner, not its centre. When any joint
    has no such cell the demo draws nothing that frame: every point comes back (0, 0, 0).
    The score is the blurred value at the cell.
    """
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim == 3:
        hm = hm[None]
    n, h, w, k = hm.shape
    work = separable_blur(hm, BINOMIAL5, "reflect")
    around = np.pad(work, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
    peak = (
        (work > around[:, :-2, 1:-1]) & (work > around[:, 2:, 1:-1])
        & (work > around[:, 1:-1, :-2]) & (work > around[:, 1:-1, 2:]) & (work >= PEFM_MIN_PEAK)
    )
    candidates = np.where(peak, work, -np.inf).transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = candidates.argmax(axis=2)
    best = np.take_along_axis(candidates, idx[..., None], axis=2)[..., 0]
    ys, xs = idx // w, idx % w
    out = np.stack([xs * stride, ys * stride, best], axis=2).astype(np.float32)
    missing = ~np.isfinite(best).all(axis=1)
    out[missing] = 0.0
    return out


def decode_spec(heatmaps: np.ndarray, stride: int, settings) -> np.ndarray:
    """Decode by a spec's `DecodeSettings`: mdeploy's rules, or a named preset."""
    if getattr(settings, "preset", "mdeploy") == "pefm_android":
        return decode_pefm_android(heatmaps, stride)
    return decode(heatmaps, stride, settings.smooth_sigma, settings.subpixel)


def to_source(points: np.ndarray, affine: Affine) -> np.ndarray:
    """[K, 3] input-pixel keypoints -> original-image pixels (confidence kept)."""
    x, y = affine.to_source(points[:, 0], points[:, 1])
    return np.stack([x, y, points[:, 2]], axis=1).astype(np.float32)


CLEAR_PEAK = 0.3  # the least heatmap peak a joint is found clearly with
SECOND_PEAK = 0.5  # ... and no other local maximum reaches this share of it
PEAK_WINDOW = 2  # local maxima are over (2 r + 1)^2 cells; a second peak lies outside that of the first


def clear_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """[N, H, W, K] -> [N, K] True where a joint's heatmap has one clear peak: at least
    CLEAR_PEAK (heatmaps on the 0..1 scale of a drawn Gaussian), and no local maximum (5 x 5)
    of SECOND_PEAK of it or more outside the 5 x 5 cells around the highest cell. A flat top
    up to 3 cells wide is one peak; a wider one reads as two. Non-finite values count as 0.

    A joint that fails this is one the model barely finds (a low peak) or hesitates on (two
    near-equal peaks); any small change to the model, quantization among them, can move it.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    hm = np.nan_to_num(np.asarray(heatmaps, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if hm.ndim == 3:
        hm = hm[None]
    n, h, w, k = hm.shape
    r = PEAK_WINDOW
    padded = np.pad(hm, [(0, 0), (r, r), (0, 0), (0, 0)], constant_values=-np.inf)
    local = sliding_window_view(padded, 2 * r + 1, axis=1).max(axis=-1)
    padded = np.pad(local, [(0, 0), (0, 0), (r, r), (0, 0)], constant_values=-np.inf)
    local = sliding_window_view(padded, 2 * r + 1, axis=2).max(axis=-1)
    peaks = np.where((hm == local) & (hm > 0), hm, 0.0)
    flat = hm.reshape(n, h * w, k)
    top_at = flat.argmax(axis=1)  # [N, K]
    top = np.take_along_axis(flat, top_at[:, None, :], axis=1)[:, 0, :]
    ty, tx = np.divmod(top_at, w)
    yy, xx = np.arange(h)[None, :, None, None], np.arange(w)[None, None, :, None]
    near = (np.abs(yy - ty[:, None, None, :]) <= r) & (np.abs(xx - tx[:, None, None, :]) <= r)
    second = np.where(near, 0.0, peaks).max(axis=(1, 2))
    return (top >= CLEAR_PEAK) & (second < SECOND_PEAK * top)
