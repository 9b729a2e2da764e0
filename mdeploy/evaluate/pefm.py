"""PoseEstimationForMobile's own evaluation, rule for rule (`pefm_pckh`).

The numbers in that project's README (CPM 93.78, Hourglass 91.81) come from its benchmark
script, whose rules differ from standard PCKh in every step, so mdeploy reproduces them
apart from its own metrics and reports the result only under this name:
- decode: each heatmap channel is smoothed with a Gaussian of sigma 5 cells (reflecting
  borders, kernel radius 4 sigma), the first maximum in row-major order is the joint, and
  cell (row, col) maps to the image point ((col + 1) x W / w, (row + 1) x H / h) truncated
  to an integer: one cell further than the cell's far edge, not its centre;
- score: a joint is correct when its distance to the truth is at most 1.0 x |head top -
  neck| of the truth; all joints of every person count, labelled or not (an unlabelled
  joint's truth is the file's (0, 0)), and no person is skipped;
- aggregate: the mean over a person's joints, then the mean over people.
The script feeds whole single-person images; mdeploy feeds each person's crop (the same
thing for single-person crops) and maps points back through the crop, then truncates.
"""

from __future__ import annotations

import math

import numpy as np

from mdeploy.evaluate.decode import separable_blur
from mdeploy.spec import Affine

SIGMA = 5.0
TRUNCATE = 4.0


def reflect_smooth(heatmaps: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Gaussian blur of [N, H, W, K] heatmaps over H and W with half-sample reflecting borders."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return separable_blur(heatmaps, kernel / kernel.sum(), "symmetric", np.float64)


def decode(heatmaps: np.ndarray, affines: list[Affine], input_size: tuple[int, int]) -> np.ndarray:
    """[N, h, w, K] heatmaps -> [N, K, 2] integer image points by the benchmark script's rules."""
    hm = reflect_smooth(heatmaps)
    n, h, w, k = hm.shape
    flat = hm.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = flat.argmax(axis=2)  # the first maximum, row-major
    rows, cols = idx // w, idx % w
    height, width = input_size
    u = (cols + 1) * (width / w)
    v = (rows + 1) * (height / h)
    out = np.zeros((n, k, 2), np.float64)
    for i, aff in enumerate(affines):
        x, y = aff.to_source(u[i], v[i])
        out[i, :, 0], out[i, :, 1] = np.trunc(x), np.trunc(y)
    return out


def correct(points: np.ndarray, truth: np.ndarray, head: tuple[int, int]) -> np.ndarray:
    """[N, K] whether each joint is within 1.0 x |head top - neck| of the truth (every joint counted)."""
    out = np.zeros(truth.shape[:2], bool)
    for i, (pred, gt) in enumerate(zip(points, truth)):
        threshold = math.dist(gt[head[0], :2], gt[head[1], :2])
        out[i] = np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1) <= threshold
    return out

