"""3-D metrics: MPJPE (root-aligned), PA-MPJPE (Procrustes, no mirror), 3DPCK and AUC, with masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from mdeploy.errors import InputError
from mdeploy.evaluate.metrics3d import (
    evaluate_3d,
    mpjpe,
    pa_mpjpe,
    pck3d,
    pck_auc,
    procrustes_align,
    similarity_transform,
    to_set,
)
from mdeploy.keypoints import get_keypoint_set

H36M = get_keypoint_set("h36m17")
MUCO = get_keypoint_set("muco21")


def random_poses(n: int, joints: int = 17, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 300.0, (n, joints, 3)) + np.array([0, 0, 4000.0])


def test_root_aligned_error_by_hand():
    truth = random_poses(1)
    shifted = truth + np.array([100.0, -50.0, 300.0])  # the whole pose moved: root-aligned, no error
    assert mpjpe(shifted, truth, root=0).value == pytest.approx(0.0, abs=1e-9)
    moved = truth.copy()
    moved[0, 5] += (30.0, 40.0, 0.0)  # one joint 50 mm off
    res = mpjpe(moved, truth, root=0)
    assert res.value == pytest.approx(50.0 / 17)
    assert res.per_joint()[5] == pytest.approx(50.0) and res.per_joint()[4] == pytest.approx(0.0)
    moved_root = truth.copy()
    moved_root[0, 0] += (0.0, 0.0, 170.0)  # the root off by 170 mm: every other joint is off by 170 after alignment
    assert mpjpe(moved_root, truth, root=0).value == pytest.approx(170.0 * 16 / 17)


def test_a_rotated_scaled_shifted_copy_has_pa_mpjpe_zero_and_mpjpe_not():
    truth = random_poses(3, seed=1)
    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    pred = 1.3 * truth @ rot.T + np.array([50.0, 80.0, -200.0])
    assert pa_mpjpe(pred, truth).value == pytest.approx(0.0, abs=1e-8)
    assert mpjpe(pred, truth, root=0).value > 100.0
    s, r, t = similarity_transform(pred[0], truth[0])
    assert s == pytest.approx(1 / 1.3) and np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r, rot.T, atol=1e-9)


def test_a_mirror_image_is_not_undone_by_procrustes():
    """Left and right swapped by a reflection: the proper rotation cannot fix it (a reflection would)."""
    truth = random_poses(1, seed=2)
    mirror = truth * np.array([-1.0, 1.0, 1.0])
    _, r, _ = similarity_transform(mirror[0], truth[0])
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert pa_mpjpe(mirror, truth).value > 50.0
    # scipy's orthogonal Procrustes allows the reflection and explains the mirror perfectly.
    pc, qc = mirror[0] - mirror[0].mean(0), truth[0] - truth[0].mean(0)
    rs, _ = orthogonal_procrustes(pc, qc)
    assert np.linalg.det(rs) == pytest.approx(-1.0)
    assert np.abs(pc @ rs - qc).max() < 1e-6


def scipy_pa_errors(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-joint errors after scipy's orthogonal Procrustes with the optimal scale; and det(R)."""
    pc, qc = pred - pred.mean(0), truth - truth.mean(0)
    r, sing_sum = orthogonal_procrustes(pc, qc)
    scale = sing_sum / (pc**2).sum()
    aligned = scale * pc @ r + truth.mean(0)
    return np.linalg.norm(aligned - truth, axis=1), float(np.linalg.det(r))


def test_pa_mpjpe_agrees_with_scipy_on_random_poses():
    truth = random_poses(60, seed=3)
    rng = np.random.default_rng(4)
    rots = Rotation.random(60, random_state=5).as_matrix()
    pred = np.einsum("nij,nkj->nki", rots, truth + rng.normal(0, 60.0, truth.shape)) * rng.uniform(0.7, 1.4, (60, 1, 1))
    ours = np.linalg.norm(procrustes_align(pred, truth) - truth, axis=2)
    proper = 0
    for i in range(60):
        ref, det = scipy_pa_errors(pred[i], truth[i])
        if det > 0:  # scipy found a rotation: the same optimum
            np.testing.assert_allclose(ours[i], ref, atol=1e-6)
            proper += 1
        else:  # scipy's optimum is a reflection, which we refuse: ours can only be worse
            assert (ours[i] ** 2).sum() >= (ref**2).sum() - 1e-6
    assert proper >= 50
    assert pa_mpjpe(pred, truth).value == pytest.approx(ours.mean())
    assert pa_mpjpe(pred, truth).value < mpjpe(pred, truth, root=0).value


def test_visibility_masks_decide_what_is_scored_and_fitted():
    truth = random_poses(2, seed=6)
    pred = truth.copy()
    pred[:, 3] += 5000.0  # a wild joint...
    vis = np.ones((2, 17), bool)
    vis[:, 3] = False  # ...that is not labelled
    assert mpjpe(pred, truth, 0, vis).value == pytest.approx(0.0, abs=1e-9)
    assert pa_mpjpe(pred, truth, vis).value == pytest.approx(0.0, abs=1e-6)  # and not fitted to either
    assert mpjpe(pred, truth, 0, vis).count[3] == 0
    assert mpjpe(pred, truth, 0).value > 200.0
    no_root = vis.copy()
    no_root[1, 0] = False  # the second pose has no root: no root-relative errors for it
    res = mpjpe(pred, truth, 0, no_root)
    assert res.count.sum() == 16
    few = np.zeros((2, 17), bool)
    few[:, :2] = True  # two joints cannot fix a rotation
    assert np.isnan(pa_mpjpe(pred, truth, few).value)
    with pytest.raises(InputError, match="visibility"):
        mpjpe(pred, truth, 0, np.ones((2, 16), bool))
    with pytest.raises(InputError, match=r"\[N, J, 3\]"):
        mpjpe(pred[:, :, :2], truth[:, :, :2], 0)


def test_pck3d_and_auc_by_hand():
    truth = np.zeros((1, 5, 3))
    pred = np.zeros((1, 5, 3))
    pred[0, 1:, 0] = [100.0, 149.0, 151.0, 400.0]  # errors 0 (root), 100, 149, 151, 400 mm
    # The root is exact after alignment and counts, as in MuPoTS' 3DPCK: 0, 100 and 149 mm are within 150.
    assert pck3d(pred, truth, root=0) == pytest.approx(60.0)
    assert pck3d(pred, truth, root=0, threshold=100.0) == pytest.approx(40.0)
    one = np.zeros((1, 2, 3))
    one_pred = one.copy()
    one_pred[0, 1, 0] = 72.5
    # The root counts at every threshold (31 of 31); 72.5 mm at thresholds 75..150 (16 of 31).
    assert pck_auc(one_pred, one, root=0) == pytest.approx(100.0 * (31 + 16) / 62)
    summary = evaluate_3d(pred, truth, root=0)
    assert set(summary) == {"mpjpe", "pa_mpjpe", "pck3d@150", "auc", "poses"}
    assert summary["mpjpe"] == pytest.approx((100 + 149 + 151 + 400) / 5)


def test_h36m_truth_scores_a_muco_prediction_on_shared_joints():
    truth = random_poses(2, seed=7)
    onto, vis = to_set(truth, H36M, MUCO)
    assert onto.shape == (2, 21, 3) and vis.sum(axis=1).tolist() == [16, 16]
    assert np.isnan(onto[:, MUCO.index("right_toe")]).all()
    np.testing.assert_array_equal(onto[:, MUCO.root_index], truth[:, H36M.root_index])
    pred = onto.copy()
    pred[:, MUCO.index("left_toe")] = 0.0  # joints the truth lacks are not scored
    assert mpjpe(pred, onto, MUCO.root_index, vis).value == pytest.approx(0.0)
