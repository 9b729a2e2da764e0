"""COCO-keypoints datasets: a json of images and person annotations + a folder of images.

Each annotated person with at least one labelled keypoint is one sample. Visibility
follows COCO: 0 not labelled, 1 labelled but hidden, 2 visible. A dataset whose images
each hold one person (synthetic figures, pre-cropped single-person sets) is fed whole
(`crop = "image"`), like a camera frame; a dataset with several people per image is fed
as crops around each person (`crop = "person"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import KeypointSet

PERSON_MARGIN = 1.25  # crop = person box grown by this factor


@dataclass(frozen=True)
class Sample:
    image: Path
    width: int
    height: int
    keypoints: np.ndarray  # [K, 3] x, y, v in image pixels (continuous coordinates)
    bbox: tuple[float, float, float, float]  # x, y, w, h

    def crop_box(self, mode: str) -> tuple[float, float, float, float]:
        """The region of the image the model sees (before augmentation)."""
        if mode == "image":
            return (0.0, 0.0, float(self.width), float(self.height))
        x, y, w, h = self.bbox
        side = max(w, h) * PERSON_MARGIN
        cx, cy = x + w / 2, y + h / 2
        return (cx - side / 2, cy - side / 2, side, side)


@dataclass
class Dataset:
    samples: list[Sample]
    crop: str  # "image" | "person"
    skipped: int  # annotations without a labelled keypoint
    source: Path

    def __len__(self) -> int:
        return len(self.samples)

    def pixel_count(self) -> int:
        return sum(s.width * s.height for s in self.samples)


def load_coco(annotations: Path, images: Path, keypoints: KeypointSet, *, where: str | None = None, check_files: bool = True) -> Dataset:
    annotations, images = Path(annotations), Path(images)
    try:
        data = json.loads(annotations.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"annotations not found: {annotations}", where=where) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{annotations} is not a JSON file: {err}", where=where) from None
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise InputError(f"{annotations} is not a COCO keypoints file (needs 'images' and 'annotations')", where=where)
    if not images.is_dir():
        raise InputError(f"image folder not found: {images}", where=where)

    k = len(keypoints)
    for cat in data.get("categories", []):
        names = cat.get("keypoints")
        if names and len(names) != k:
            raise InputError(
                f"{annotations.name}: category {cat.get('name')!r} has {len(names)} keypoints, keypoint set {keypoints.name} has {k}",
                where=where,
            )
    by_id = {}
    for img in data["images"]:
        try:
            by_id[img["id"]] = img
        except (KeyError, TypeError):
            raise InputError(f"{annotations.name}: an image entry has no 'id'", where=where) from None
    samples: list[Sample] = []
    skipped = 0
    per_image: dict = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd"):
            continue
        kps = np.asarray(ann.get("keypoints", []), np.float32)
        if kps.size != 3 * k:
            raise InputError(
                f"{annotations.name}: annotation {ann.get('id')} has {kps.size // 3} keypoints, expected {k}", where=where
            )
        kps = kps.reshape(k, 3)
        kps[(kps[:, 0] <= 0) & (kps[:, 1] <= 0), 2] = 0  # COCO writes unlabelled joints as (0, 0, 0)
        if not (kps[:, 2] > 0).any():
            skipped += 1
            continue
        img = by_id.get(ann.get("image_id"))
        if img is None:
            raise InputError(f"{annotations.name}: annotation {ann.get('id')} names unknown image {ann.get('image_id')}", where=where)
        bbox = ann.get("bbox") or _bbox_of(kps)
        samples.append(Sample(images / img["file_name"], int(img["width"]), int(img["height"]), kps, tuple(float(v) for v in bbox)))
        per_image[img["id"]] = per_image.get(img["id"], 0) + 1
    if not samples:
        raise InputError(f"{annotations.name}: no annotation with a labelled keypoint", where=where)
    if check_files:
        missing = [s.image for s in samples if not s.image.is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} image(s) named in {annotations.name} are missing from {images}, e.g. {missing[0].name}",
                where=where,
            )
    crop = "image" if max(per_image.values()) == 1 else "person"
    return Dataset(samples, crop, skipped, annotations)


def _bbox_of(kps: np.ndarray) -> list[float]:
    lab = kps[kps[:, 2] > 0]
    x0, y0 = lab[:, 0].min(), lab[:, 1].min()
    return [float(x0), float(y0), float(lab[:, 0].max() - x0), float(lab[:, 1].max() - y0)]
