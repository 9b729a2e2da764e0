"""PCKh: the fraction of joints predicted within a fraction of the head size of the truth.

- `pckh@0.5` (mdeploy's standard): visible joints (COCO v = 2), threshold 0.5 x head
  size, head size = |head top - neck| (MPII defines head size from a head box; AI
  Challenger-style data has none, this is the substitute).
- `pckh@0.5_labelled`: the same over every labelled joint (v > 0, occluded ones too).
- `pefm_pckh`: the lenient variant behind PoseEstimationForMobile's published numbers:
  threshold 1.0 x |head top - neck|, every labelled joint, heatmaps smoothed (sigma 5)
  before the argmax. Named as such, never reported as PCKh.

Samples whose head top or neck is unlabelled have no head size and are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PEFM_SMOOTH_SIGMA = 5.0


@dataclass(frozen=True)
class PCK:
    correct: np.ndarray  # [K] joints within the threshold
    total: np.ndarray  # [K] joints scored

    @property
    def value(self) -> float:
        t = self.total.sum()
        return float(100.0 * self.correct.sum() / t) if t else float("nan")

    def per_joint(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, 100.0 * self.correct / np.maximum(self.total, 1), np.nan)


def head_sizes(truth: np.ndarray, head: tuple[int, int]) -> np.ndarray:
    """[N] |head top - neck|, NaN where either is unlabelled."""
    a, b = head
    ok = (truth[:, a, 2] > 0) & (truth[:, b, 2] > 0)
    size = np.linalg.norm(truth[:, a, :2] - truth[:, b, :2], axis=1)
    return np.where(ok & (size > 0), size, np.nan)


def pckh(pred: np.ndarray, truth: np.ndarray, head: tuple[int, int], alpha: float, min_visibility: int) -> PCK:
    """pred [N, K, >=2], truth [N, K, 3] in the same pixels; joints with v >= min_visibility count."""
    size = head_sizes(truth, head)
    scored = (truth[:, :, 2] >= min_visibility) & np.isfinite(size)[:, None]
    dist = np.linalg.norm(pred[:, :, :2] - truth[:, :, :2], axis=2)
    within = dist <= alpha * np.nan_to_num(size, nan=0.0)[:, None]
    return PCK((within & scored).sum(axis=0), scored.sum(axis=0))
