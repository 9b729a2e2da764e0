"""Decoding heatmaps and the PCKh metrics, on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.evaluate.decode import clear_peaks, decode, gaussian_kernel, smooth, to_source
from mdeploy.evaluate.metrics import head_sizes, pckh
from mdeploy.spec import Preprocessing


def blob(h, w, cx, cy, sigma=1.5):
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def test_argmax_cell_maps_to_its_centre_in_input_pixels():
    hm = np.zeros((1, 8, 10, 2), np.float32)
    hm[0, 3, 7, 0] = 0.9
    hm[0, 0, 0, 1] = 0.1
    pts = decode(hm, stride=4, subpixel=False)[0]
    np.testing.assert_allclose(pts[0], [(7 + 0.5) * 4, (3 + 0.5) * 4, 0.9])
    np.testing.assert_allclose(pts[1], [2.0, 2.0, 0.1])


def test_subpixel_moves_a_quarter_cell_toward_the_higher_neighbour():
    hm = blob(16, 16, 8.8, 5.3)[None, :, :, None].astype(np.float32)  # peak cell (8, 5), true centre right of it
    coarse = decode(hm, 1, subpixel=False)[0, 0]
    fine = decode(hm, 1, subpixel=True)[0, 0]
    assert coarse[:2].tolist() == [8.5, 5.5]
    assert fine[:2].tolist() == [8.75, 5.25]
    assert abs(fine[0] - 8.8) < abs(coarse[0] - 8.8) and abs(fine[1] - 5.3) < abs(coarse[1] - 5.3)


def test_smoothing_finds_the_broad_peak_not_a_single_spike():
    hm = blob(32, 32, 20.5, 20.5, sigma=3)
    hm[4, 4] = 1.2  # a lone spike higher than the real peak
    hm = hm[None, :, :, None].astype(np.float32)
    assert decode(hm, 1, sigma=0, subpixel=False)[0, 0, :2].tolist() == [4.5, 4.5]
    x, y, conf = decode(hm, 1, sigma=2.0, subpixel=False)[0, 0]
    assert (x, y) == (20.5, 20.5)
    assert conf == pytest.approx(1.0, abs=1e-6)  # confidence is the raw heatmap value at the cell


def test_gaussian_kernel_and_smooth_preserve_mass():
    k = gaussian_kernel(1.5)
    assert len(k) == 11 and k.sum() == pytest.approx(1.0)
    hm = np.zeros((1, 20, 20, 1), np.float32)
    hm[0, 10, 10, 0] = 1.0
    assert smooth(hm, 1.5).sum() == pytest.approx(1.0, abs=1e-5)


def test_to_source_inverts_the_preprocessing():
    pre = Preprocessing((96, 128), "rgb", (0, 1), resize="letterbox")
    aff = pre.geometry(640, 480)
    u, v = aff.to_input(np.array([100.0, 500.0]), np.array([50.0, 400.0]))
    back = to_source(np.stack([u, v, [0.5, 0.6]], axis=1), aff)
    np.testing.assert_allclose(back, [[100, 50, 0.5], [500, 400, 0.6]], atol=1e-3)


def truth_with_head(n=2):
    t = np.zeros((n, 14, 3), np.float32)
    t[:, :, 2] = 2
    t[:, 0, :2] = (50, 10)  # head top
    t[:, 1, :2] = (50, 30)  # neck: head size 20
    for k in range(2, 14):
        t[:, k, :2] = (20 + 5 * k, 40 + 4 * k)
    return t


def test_pckh_counts_joints_within_half_the_head_size():
    truth = truth_with_head()
    pred = truth[..., :2].copy()
    pred[0, 5] += (9.9, 0)  # within 0.5 x 20
    pred[0, 6] += (10.1, 0)  # just outside
    pred[1, 7] += (0, 30)  # far
    result = pckh(pred, truth, head=(0, 1), alpha=0.5, min_visibility=2)
    assert result.total.sum() == 28
    assert result.correct.sum() == 26
    assert result.value == pytest.approx(100 * 26 / 28)
    assert result.per_joint()[6] == 50.0 and result.per_joint()[5] == 100.0


def test_visibility_head_size_and_lenient_variant():
    truth = truth_with_head()
    truth[0, 8, 2] = 1  # occluded: not in the standard metric, in the labelled one
    truth[1, 0, 2] = 0  # no head top: sample 1 has no head size, is not scored
    pred = truth[..., :2].copy()
    pred[0, 8] += (15, 0)
    assert np.isnan(head_sizes(truth, (0, 1))[1])
    standard = pckh(pred, truth, (0, 1), 0.5, 2)
    labelled = pckh(pred, truth, (0, 1), 0.5, 1)
    lenient = pckh(pred, truth, (0, 1), 1.0, 1)
    assert standard.total.sum() == 13 and standard.value == 100.0
    assert labelled.total.sum() == 14 and labelled.correct.sum() == 13
    assert lenient.correct.sum() == 14  # 15 px is within 1.0 x 20


def test_pefm_android_preset_follows_the_demo_rules():
    """OpenCV's 5x5 blur (mirror borders), strict 4-neighbour local maximum >= 0.01, cell corners;
    one joint without a peak blanks the frame. Checked against scipy's mirror-mode convolution."""
    from scipy.ndimage import convolve1d

    from mdeploy.evaluate.decode import decode_pefm_android

    rng = np.random.default_rng(3)
    hm = (rng.random((1, 12, 10, 3)) * 0.5).astype(np.float32)
    hm[0, 7, 2, 0] = 3.0
    got = decode_pefm_android(hm, stride=4)[0]
    taps = np.array([1, 4, 6, 4, 1], np.float32) / 16
    blurred = convolve1d(convolve1d(hm[0], taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")
    for k in range(3):
        b = np.pad(blurred[..., k], 1, constant_values=-1)
        core = b[1:-1, 1:-1]
        peak = (core > b[:-2, 1:-1]) & (core > b[2:, 1:-1]) & (core > b[1:-1, :-2]) & (core > b[1:-1, 2:]) & (core >= 0.01)
        y, x = np.unravel_index(np.argmax(np.where(peak, core, -np.inf)), core.shape)
        np.testing.assert_allclose(got[k], [x * 4, y * 4, core[y, x]], rtol=1e-5)
    assert got[0, :2].tolist() == [8.0, 28.0]  # the corner of cell (2, 7), not its centre
    flat = hm.copy()
    flat[..., 1] = 0.005  # no cell reaches 0.01: the demo draws nothing that frame
    assert not decode_pefm_android(flat, stride=4).any()


def test_a_clear_peak_is_high_and_alone():
    """clear_peaks: one peak of 0.3 or more and no other local maximum of half of it; a broad
    blob or a plateau of two equal cells is one peak, not two; a NaN cell counts as 0."""
    hm = np.zeros((2, 24, 24, 4), np.float32)
    hm[0, ..., 0] = 0.9 * blob(24, 24, 6, 6) + 0.4 * blob(24, 24, 18, 18)  # second peak 0.44 of the first
    hm[0, ..., 1] = 0.9 * blob(24, 24, 6, 6) + 0.5 * blob(24, 24, 18, 18)  # 0.56: two peaks
    hm[0, ..., 2] = 0.25 * blob(24, 24, 12, 12)  # one peak, too low
    hm[0, ..., 3] = 0.8 * blob(24, 24, 12, 12, sigma=4)  # broad
    hm[1, 5, 5:7, 0] = 0.7  # a plateau of two cells
    hm[1, ..., 1] = -0.1  # nothing above zero
    hm[1, ..., 2] = 0.9 * blob(24, 24, 12, 12)
    hm[1, 3, 3, 2] = np.nan
    assert clear_peaks(hm).tolist() == [[True, False, False, True], [True, False, True, False]]
