"""Synthetic figures: deterministic, correctly labelled, varied, written as real COCO datasets."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from mdeploy.data.coco import load_coco
from mdeploy.data.synthetic import SynthConfig, generate, render
from mdeploy.keypoints import get_keypoint_set

AIC = get_keypoint_set("aic14")


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = generate(SynthConfig(12, seed=4), tmp_path / "a", workers=1)
    b = generate(SynthConfig(12, seed=4), tmp_path / "b", workers=2)
    c = generate(SynthConfig(12, seed=5), tmp_path / "c", workers=1)

    def digest(folder):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((folder / "images").iterdir()))).hexdigest()

    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert a["annotations"] == b["annotations"] != c["annotations"]


def test_labels_are_consistent_over_many_figures():
    kps = np.stack([render(7, i, 128)[1] for i in range(150)])
    labelled = kps[..., 2] > 0
    inside = (kps[..., 0] >= 0) & (kps[..., 0] < 128) & (kps[..., 1] >= 0) & (kps[..., 1] < 128)
    assert np.all(inside[labelled])
    assert np.all(kps[~labelled][:, :2] == 0)  # unlabelled joints are (0, 0, 0), as in COCO
    # The figures face the camera: the right shoulder is on the image's left of the left one.
    both = labelled[:, 2] & labelled[:, 5]
    rs, ls = kps[both, 2, 0], kps[both, 5, 0]
    assert np.mean(rs < ls) > 0.9
    # Variety: some joints hidden by occluders (v=1), some cut off by the border (v=0).
    assert (kps[..., 2] == 1).any(axis=1).sum() >= 10
    assert (~labelled).any(axis=1).sum() >= 5
    heights = [np.ptp(k[k[:, 2] > 0, 1]) for k in kps if (k[:, 2] > 0).sum() > 8]
    assert max(heights) > 1.5 * min(heights)


def test_the_figure_is_drawn_where_its_labels_are():
    """Pixels around a labelled joint differ from the background far from the figure."""
    rgb, kps = render(3, 0, 192)
    vis = kps[:, 2] == 2
    assert vis.sum() >= 8
    assert rgb.shape == (192, 192, 3) and rgb.dtype == np.uint8


def test_written_dataset_is_a_loadable_coco_file(tmp_path):
    generate(SynthConfig(20, seed=1, size=96), tmp_path / "ds", workers=1)
    data = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert data["categories"][0]["keypoints"] == list(AIC.names)
    assert len(data["images"]) == 20 and data["images"][0]["width"] == 96
    ds = load_coco(tmp_path / "ds" / "annotations.json", tmp_path / "ds" / "images", AIC)
    assert len(ds) == 20 and ds.crop == "image"
