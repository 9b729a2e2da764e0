"""PCK metrics: the fraction of joints predicted within a fraction of a person's size.

Every metric names its normaliser, because numbers under different normalisers are not
comparable:
- `pckh@0.5` (mdeploy's standard): visible joints (COCO v = 2), threshold 0.5 x head
  size. The head size comes from the data's own joints: |head top - neck| (AI Challenger
  convention), |head top - upper neck| (MPII joints without a head box), or 0.6 x the head
  box diagonal (MPII's standard, where a file has head boxes); `Dataset.head_rule` names it.
- `pckh@0.5_labelled`: the same over every labelled joint (v > 0, occluded ones too).
- `pefm_pckh`: the lenient variant behind PoseEstimationForMobile's published numbers
  (`mdeploy.evaluate.pefm`). Named as such, never reported as PCKh.
- `pck@0.2_torso`: threshold 0.2 x |left shoulder - right hip| (the LSP torso convention),
  for data without head joints (COCO-17 people), visible joints.

A sample without the joints its normaliser needs is not scored by that metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TORSO = ("left_shoulder", "right_hip")

DESCRIPTIONS = {
    "pckh@0.5": "PCKh@0.5: visible joints within 0.5 x head size",
    "pckh@0.5_labelled": "PCKh@0.5 over every labelled joint (occluded ones too)",
    "pefm_pckh": "PoseEstimationForMobile's own evaluation (1.0 x |head top - neck|, every joint, its decode)",
    "pck@0.2_torso": "PCK@0.2 (torso): visible joints within 0.2 x |left shoulder - right hip|",
}
LABELS = {
    "pckh@0.5": "PCKh@0.5",
    "pckh@0.5_labelled": "PCKh@0.5 (labelled)",
    "pefm_pckh": "PEFM PCKh",
    "pck@0.2_torso": "PCK@0.2 torso",
    # multi-person (evaluate/multi.py): COCO keypoint AP/AR by OKS, in percent
    "ap_oks": "AP (OKS)",
    "ap50_oks": "AP50 (OKS)",
    "ap75_oks": "AP75 (OKS)",
    "ar_oks": "AR (OKS)",
    # 3-D (evaluate/metrics3d.py, family volumetric): errors in mm, 3DPCK in percent
    "mpjpe": "MPJPE (mm)",
    "pa_mpjpe": "PA-MPJPE (mm)",
    "pck3d@150": "3DPCK@150mm",
    "auc": "3DPCK AUC",
}
# Errors: lower is better, so an artifact's drop is its value minus the reference's (gates, mixed precision).
LOWER_IS_BETTER = frozenset({"mpjpe", "pa_mpjpe"})
UNITS = {"mpjpe": "mm", "pa_mpjpe": "mm"}  # every other metric is a percentage


def unit(metric: str | None) -> str:
    """How a metric's values are written after the number: "%" or " mm"."""
    return f" {UNITS[metric]}" if metric in UNITS else "%"


def drop(metric: str | None, reference: float | None, value: float | None) -> float | None:
    """How much worse `value` is than `reference` on `metric` (positive: worse), rounded; None when either is missing.

    Percentages drop when they fall, errors (LOWER_IS_BETTER) when they grow: one gate rule, drop <= max_drop,
    serves both."""
    if reference is None or value is None:
        return None
    return round(value - reference if metric in LOWER_IS_BETTER else reference - value, 3)


@dataclass(frozen=True)
class PCK:
    correct: np.ndarray  # [K] joints within the threshold
    total: np.ndarray  # [K] joints scored
    hits: np.ndarray | None = None  # [N, K] per person: 1 within, 0 not, -1 not scored

    @property
    def value(self) -> float:
        t = self.total.sum()
        return float(100.0 * self.correct.sum() / t) if t else float("nan")

    def per_joint(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, 100.0 * self.correct / np.maximum(self.total, 1), np.nan)


def joint_distance(truth: np.ndarray, a: int, b: int) -> np.ndarray:
    """[N] |joint a - joint b|, NaN where either is unlabelled (or they coincide)."""
    ok = (truth[:, a, 2] > 0) & (truth[:, b, 2] > 0)
    size = np.linalg.norm(truth[:, a, :2] - truth[:, b, :2], axis=1)
    return np.where(ok & (size > 0), size, np.nan)


def head_sizes(truth: np.ndarray, head: tuple[int, int]) -> np.ndarray:
    """[N] |head top - neck| from joints of the truth array, NaN where either is unlabelled."""
    return joint_distance(truth, *head)


def pck(pred: np.ndarray, truth: np.ndarray, sizes: np.ndarray, alpha: float, min_visibility: int) -> PCK:
    """pred [N, K, >=2], truth [N, K, 3] in the same pixels, sizes [N] (NaN: not scored)."""
    sizes = np.asarray(sizes, np.float64)
    scored = (truth[:, :, 2] >= min_visibility) & np.isfinite(sizes)[:, None]
    dist = np.linalg.norm(pred[:, :, :2] - truth[:, :, :2], axis=2)
    within = dist <= alpha * np.nan_to_num(sizes, nan=0.0)[:, None]
    hits = np.where(scored, within.astype(np.int8), np.int8(-1))
    return PCK((within & scored).sum(axis=0), scored.sum(axis=0), hits)


def pckh(pred: np.ndarray, truth: np.ndarray, head: tuple[int, int], alpha: float, min_visibility: int) -> PCK:
    """PCKh with the head size measured between two joints of `truth`."""
    return pck(pred, truth, head_sizes(truth, head), alpha, min_visibility)
