"""Keypoint datasets: readers (COCO json, MPII json, AI Challenger conversion), synthetic
figures, and the tf.data pipeline that feeds training."""

from __future__ import annotations

from pathlib import Path


def load_keypoints(annotations: Path, images: Path, keypoints, *, where: str | None = None, crop: str = "auto"):
    """A keypoints file of either layout (a COCO json is an object, an MPII json a list), mapped onto `keypoints`."""
    from mdeploy.data.coco import load_coco
    from mdeploy.data.mpii import load_mpii

    if _starts_with(Path(annotations), b"["):
        return load_mpii(annotations, images, keypoints, where=where, crop="person" if crop == "auto" else crop)
    return load_coco(annotations, images, keypoints, where=where, crop=crop)


def _starts_with(path: Path, char: bytes) -> bool:
    """Whether a JSON file's first non-blank byte is `char` (False for anything unreadable: the reader says why)."""
    if not path.is_file():  # never open a FIFO or a device
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4096).lstrip()[:1] == char
    except OSError:
        return False
