"""3-D pose metrics in millimetres: MPJPE, PA-MPJPE, 3DPCK and its AUC.

Each metric names its alignment, because numbers under different alignments are not
comparable:
- `mpjpe`: mean per-joint position error after moving both poses' root joint to the origin
  (Human3.6M "protocol 1"); what an app that knows the root position gets.
- `pa_mpjpe`: the same after the best similarity transform (scale, rotation, translation,
  Procrustes) of the prediction onto the truth ("protocol 2"): it ignores global scale and
  orientation, so it measures the pose's shape alone. The rotation is proper (no mirror):
  a prediction that is the mirror image of the truth has swapped left and right, and stays
  wrong.
- `pck3d@150`: the share of joints within 150 mm of the truth after root alignment
  (MuPoTS' 3DPCK); `auc` averages it over thresholds 0, 5, ..., 150 mm.

Poses are [N, J, 3] arrays; `visible` ([N, J] bool, default all) says which joints are
scored and, for PA-MPJPE, which ones the alignment is fitted to. A pose whose root is not
visible is not scored by the root-aligned metrics; one with fewer than 3 visible joints is
not scored by PA-MPJPE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import KeypointSet, joint_correspondence

PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = tuple(float(t) for t in np.arange(0.0, 151.0, 5.0))

DESCRIPTIONS = {
    "mpjpe": "MPJPE (mm): mean joint error after aligning the root joints",
    "pa_mpjpe": "PA-MPJPE (mm): mean joint error after Procrustes alignment (scale, rotation, translation)",
    "pck3d@150": "3DPCK: joints within 150 mm after aligning the root joints",
    "auc": "AUC of 3DPCK over thresholds 0-150 mm",
}
LABELS = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "pck3d@150": "3DPCK@150mm", "auc": "3DPCK AUC"}


@dataclass(frozen=True)
class JointErrors:
    """Per-joint error sums and counts over a set of poses (mm)."""

    total: np.ndarray  # [J] sum of errors of the scored joints
    count: np.ndarray  # [J] scored joints

    @property
    def value(self) -> float:
        n = self.count.sum()
        return float(self.total.sum() / n) if n else float("nan")

    def per_joint(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


def _check(pred: np.ndarray, truth: np.ndarray, visible) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(pred, np.float64)
    t = np.asarray(truth, np.float64)
    if p.ndim == 2:
        p, t = p[None], t[None]
        visible = None if visible is None else np.asarray(visible)[None]
    if p.shape != t.shape or p.ndim != 3 or p.shape[2] != 3:
        raise InputError(f"3-D poses must both be [N, J, 3]; got {list(p.shape)} and {list(t.shape)}")
    vis = np.ones(p.shape[:2], bool) if visible is None else np.asarray(visible, bool)
    if vis.shape != p.shape[:2]:
        raise InputError(f"visibility must be [N, J] = {list(p.shape[:2])}, got {list(vis.shape)}")
    vis = vis & np.isfinite(p).all(axis=2) & np.isfinite(t).all(axis=2)
    return p, t, vis


def root_align(poses: np.ndarray, root: int) -> np.ndarray:
    """[N, J, 3] poses with their root joint moved to the origin."""
    p = np.asarray(poses, np.float64)
    return p - p[:, root : root + 1]


def _root_aligned(pred, truth, visible, root: int):
    p, t, vis = _check(pred, truth, visible)
    vis = vis & vis[:, root : root + 1]  # no root, no root-relative error
    return root_align(p, root), root_align(t, root), vis


def joint_errors(pred, truth, root: int, visible=None) -> np.ndarray:
    """[N, J] root-aligned joint errors (mm); NaN where not scored."""
    p, t, vis = _root_aligned(pred, truth, visible, root)
    return np.where(vis, np.linalg.norm(p - t, axis=2), np.nan)


def _sum(err: np.ndarray) -> JointErrors:
    ok = np.isfinite(err)
    return JointErrors(np.where(ok, err, 0.0).sum(axis=0), ok.sum(axis=0))


def mpjpe(pred, truth, root: int, visible=None) -> JointErrors:
    """Mean per-joint position error after aligning the roots (Human3.6M protocol 1)."""
    return _sum(joint_errors(pred, truth, root, visible))


def similarity_transform(source: np.ndarray, target: np.ndarray, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """The scale s, proper rotation R (det +1) and translation t minimising sum |s R x + t - y|^2.

    `source`, `target`: [J, 3]; `weights` ([J], 0/1) restricts the fit to some joints. The
    closed form (Umeyama): SVD of the cross-covariance; when the best orthogonal map would be
    a reflection, the singular direction of the smallest singular value is flipped, which
    gives the best rotation instead.
    """
    x = np.asarray(source, np.float64)
    y = np.asarray(target, np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    wsum = w.sum()
    mx = (w[:, None] * x).sum(axis=0) / wsum
    my = (w[:, None] * y).sum(axis=0) / wsum
    xc, yc = x - mx, y - my
    cov = (w[:, None] * yc).T @ xc / wsum  # 3x3: target x source
    u, sing, vt = np.linalg.svd(cov)
    flip = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        flip[-1] = -1.0
    rot = u @ np.diag(flip) @ vt
    var = (w * (xc**2).sum(axis=1)).sum() / wsum
    scale = float((sing * flip).sum() / var) if var > 0 else 1.0
    trans = my - scale * rot @ mx
    return scale, rot, trans


def procrustes_align(pred, truth, visible=None) -> np.ndarray:
    """[N, J, 3] predictions moved onto the truth by each pose's best similarity transform
    (fitted to its visible joints); poses with fewer than 3 visible joints come back NaN."""
    p, t, vis = _check(pred, truth, visible)
    out = np.full_like(p, np.nan)
    for i in range(len(p)):
        if vis[i].sum() < 3:
            continue
        s, r, tr = similarity_transform(np.nan_to_num(p[i]), np.nan_to_num(t[i]), vis[i].astype(np.float64))
        out[i] = s * p[i] @ r.T + tr
    return out


def pa_mpjpe(pred, truth, visible=None) -> JointErrors:
    """Mean per-joint position error after Procrustes alignment (Human3.6M protocol 2)."""
    p, t, vis = _check(pred, truth, visible)
    aligned = procrustes_align(p, t, vis)
    err = np.linalg.norm(aligned - t, axis=2)
    return _sum(np.where(vis & np.isfinite(err), err, np.nan))


def pck3d(pred, truth, root: int, visible=None, threshold: float = PCK_THRESHOLD_MM) -> float:
    """Percentage of scored joints within `threshold` mm after root alignment (3DPCK)."""
    err = joint_errors(pred, truth, root, visible)
    scored = np.isfinite(err)
    return float(100.0 * (err[scored] <= threshold).mean()) if scored.any() else float("nan")


def pck_auc(pred, truth, root: int, visible=None, thresholds=AUC_THRESHOLDS_MM) -> float:
    """3DPCK averaged over `thresholds` (0, 5, ..., 150 mm by default), in percent."""
    err = joint_errors(pred, truth, root, visible)
    scored = err[np.isfinite(err)]
    if not scored.size:
        return float("nan")
    return float(np.mean([100.0 * (scored <= th).mean() for th in thresholds]))


def evaluate_3d(pred, truth, root: int, visible=None) -> dict[str, float]:
    """Every 3-D metric of one set of predictions, keyed as in DESCRIPTIONS (plus `poses`)."""
    p, t, vis = _check(pred, truth, visible)
    return {
        "mpjpe": mpjpe(p, t, root, vis).value,
        "pa_mpjpe": pa_mpjpe(p, t, vis).value,
        "pck3d@150": pck3d(p, t, root, vis),
        "auc": pck_auc(p, t, root, vis),
        "poses": int(len(p)),
    }


def to_set(poses: np.ndarray, source: KeypointSet, target: KeypointSet, visible=None) -> tuple[np.ndarray, np.ndarray]:
    """[N, J_source, 3] poses re-ordered into `target`'s joints by name -> (poses, visible).

    Joints `target` has and `source` lacks come back NaN and not visible, so a Human3.6M-17
    truth scores a MuCo-21 model on the 16 joints they share.
    """
    p = np.asarray(poses, np.float64)
    vis = np.ones(p.shape[:2], bool) if visible is None else np.asarray(visible, bool)
    out = np.full((p.shape[0], len(target), p.shape[2]), np.nan)
    out_vis = np.zeros((p.shape[0], len(target)), bool)
    for k, j in enumerate(joint_correspondence(source, target)):
        if j is not None:
            out[:, k] = p[:, j]
            out_vis[:, k] = vis[:, j]
    return out, out_vis
