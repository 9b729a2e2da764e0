"""Keypoint datasets: COCO-keypoints json (and MPII json) + a folder of images.

Each annotated person with at least one labelled keypoint is one sample. Visibility
follows COCO: 0 not labelled, 1 labelled but hidden, 2 visible. A file's keypoints are
mapped onto the model's keypoint set by name (`categories[].keypoints`, through the
alias table in `mdeploy.keypoints`); joints the file lacks are unlabelled (v = 0) and are
neither trained nor scored. Only a file without names is read by position, and the
dataset's notes say so.

A dataset whose images each hold one person (synthetic figures, pre-cropped
single-person sets) is fed whole (`crop = "image"`), like a camera frame; a dataset with
several people per image is fed as crops around each person (`crop = "person"`). A recipe
may force either.

Each sample also carries the normaliser that PCKh needs, measured in the file's own
joints (so a model without head joints can still be scored by PCKh on data that has
them): the head size, and the rule that gave it (`Dataset.head_rule`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import JointMapping, KeypointSet, canonical_joint, map_names, positional_mapping
from mdeploy.limits import check_pixels

PERSON_MARGIN = 1.25  # crop = person box grown by this factor
MAX_ANNOTATION_BYTES = 512 * 1024 * 1024

HEAD_TOP_NECK = "|head top - neck| (AI Challenger convention)"
HEAD_TOP_UPPER_NECK = "|head top - upper neck| (MPII joints; the file has no head box)"
HEAD_BOX = "0.6 x head-box diagonal (MPII standard)"


@dataclass(frozen=True)
class Sample:
    image: Path
    width: int
    height: int
    keypoints: np.ndarray  # [K, 3] x, y, v in image pixels (continuous coordinates), model order
    bbox: tuple[float, float, float, float]  # x, y, w, h
    head_size: float | None = None  # PCKh's normaliser from the file's own joints (or head box)
    box: tuple[float, float, float, float] | None = None  # a crop chosen for this sample (evaluate/crops.py)

    def crop_box(self, mode: str) -> tuple[float, float, float, float]:
        """The region of the image the model sees (before augmentation)."""
        if self.box is not None:
            return self.box
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
    mapping: JointMapping | None = None
    head_rule: str | None = None  # how head sizes were measured; None: the file has no head joints
    layout: str = "coco"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def pixel_count(self) -> int:
        return sum(s.width * s.height for s in self.samples)

    @property
    def people(self) -> int:
        return len(self.samples)

    @property
    def images(self) -> int:
        return len({s.image for s in self.samples})

    def describe(self) -> str:
        return f"{self.people} people in {self.images} images ({self.layout}; {self.mapping.describe() if self.mapping else ''})"


def read_json(annotations: Path, where: str | None) -> object:
    annotations = Path(annotations)
    try:
        if annotations.exists() and not annotations.is_file():
            raise InputError(f"expected an annotations file, got {'a folder' if annotations.is_dir() else 'something else'}: {annotations}", where=where)
        if annotations.stat().st_size > MAX_ANNOTATION_BYTES:
            raise InputError(f"{annotations} is larger than {MAX_ANNOTATION_BYTES >> 20} MiB", where=where)
        return json.loads(annotations.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"annotations not found: {annotations}", where=where) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{annotations} is not a JSON file: {err}", where=where) from None


def head_rule_of(file_names: tuple[str, ...]) -> tuple[str, tuple[int, int]] | None:
    """The file's own head joints (head top + neck, or head top + upper neck), by name."""
    canon = [canonical_joint(n) for n in file_names]
    for other, rule in (("neck", HEAD_TOP_NECK), ("upper_neck", HEAD_TOP_UPPER_NECK)):
        if "head_top" in canon and other in canon:
            return rule, (canon.index("head_top"), canon.index(other))
    return None


def head_size_of(raw: np.ndarray, joints: tuple[int, int] | None) -> float | None:
    """|a - b| of two labelled joints of a [J, 3] array in the file's order."""
    if joints is None:
        return None
    a, b = raw[joints[0]], raw[joints[1]]
    if a[2] <= 0 or b[2] <= 0:
        return None
    size = float(np.linalg.norm(a[:2] - b[:2]))
    return size if size > 0 else None


def apply_mapping(raw: np.ndarray, mapping: JointMapping) -> np.ndarray:
    """[J, 3] in the file's order -> [K, 3] in the target set's order (absent joints unlabelled)."""
    out = np.zeros((len(mapping.target), 3), np.float32)
    for k, j in enumerate(mapping.source):
        if j is not None:
            out[k] = raw[j]
    return out


def choose_crop(requested: str, per_image: dict) -> str:
    if requested != "auto":
        return requested
    return "image" if max(per_image.values()) == 1 else "person"


def load_coco(
    annotations: Path,
    images: Path,
    keypoints: KeypointSet,
    *,
    where: str | None = None,
    check_files: bool = True,
    crop: str = "auto",
) -> Dataset:
    annotations, images = Path(annotations), Path(images)
    data = read_json(annotations, where)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise InputError(f"{annotations} is not a COCO keypoints file (needs 'images' and 'annotations')", where=where)
    if not images.is_dir():
        raise InputError(f"image folder not found: {images}", where=where)

    categories = [c for c in data.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    if categories:
        names = tuple(categories[0]["keypoints"])
        for cat in categories[1:]:
            if tuple(cat["keypoints"]) != names:
                raise InputError(f"{annotations.name}: categories name different keypoints; mdeploy reads one keypoint layout per file", where=where)
        mapping = map_names(names, keypoints, source=annotations.name, where=where)
    else:
        names = None
        mapping = None  # decided from the first annotation's keypoint count
    by_id = {}
    for img in data["images"]:
        try:
            by_id[img["id"]] = img
        except (KeyError, TypeError):
            raise InputError(f"{annotations.name}: an image entry has no 'id'", where=where) from None
    samples: list[Sample] = []
    skipped = 0
    per_image: dict = {}
    head = None
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise InputError(f"{annotations.name}: an annotation is not a mapping", where=where)
        if ann.get("iscrowd"):
            continue
        try:
            raw = np.asarray(ann.get("keypoints", []), np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{annotations.name}: annotation {ann.get('id')} has non-numeric keypoints", where=where) from None
        if mapping is None:
            mapping = positional_mapping(raw.size // 3, keypoints, source=annotations.name, where=where)
            names = mapping.file_names
        expected = len(mapping.file_names)
        if raw.ndim != 1 or raw.size != 3 * expected:
            raise InputError(
                f"{annotations.name}: annotation {ann.get('id')} has {raw.size // 3} keypoints, expected {expected}", where=where
            )
        raw = raw.reshape(expected, 3)
        raw[(raw[:, 0] <= 0) & (raw[:, 1] <= 0), 2] = 0  # COCO writes unlabelled joints as (0, 0, 0)
        if head is None:
            head = head_rule_of(names) or ("", None)
        kps = apply_mapping(raw, mapping)
        if not (kps[:, 2] > 0).any():
            skipped += 1
            continue
        img = by_id.get(ann.get("image_id"))
        if img is None:
            raise InputError(f"{annotations.name}: annotation {ann.get('id')} names unknown image {ann.get('image_id')}", where=where)
        bbox = ann.get("bbox") or _bbox_of(kps)
        try:
            sample = Sample(
                images / img["file_name"], int(img["width"]), int(img["height"]), kps,
                tuple(float(v) for v in bbox), head_size_of(raw, head[1]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{annotations.name}: image {img.get('id')} lacks file_name, width or height ({err})", where=where) from None
        check_pixels(img["width"], img["height"], f"{annotations.name}: image {img['file_name']}", where=where)
        samples.append(sample)
        per_image[img["id"]] = per_image.get(img["id"], 0) + 1
    if not samples:
        raise InputError(f"{annotations.name}: no annotation with a labelled keypoint", where=where)
    if check_files:
        _check_images(samples, images, annotations.name, where)
    notes = [mapping.describe()]
    return Dataset(samples, choose_crop(crop, per_image), skipped, annotations, mapping, head[0] or None, "coco", notes)


def _check_images(samples: list[Sample], images: Path, source: str, where: str | None) -> None:
    missing = [s.image for s in samples if not s.image.is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} image(s) named in {source} are missing from {images}, e.g. {missing[0].name}",
            where=where,
        )


def _bbox_of(kps: np.ndarray) -> list[float]:
    lab = kps[kps[:, 2] > 0]
    x0, y0 = lab[:, 0].min(), lab[:, 1].min()
    return [float(x0), float(y0), float(lab[:, 0].max() - x0), float(lab[:, 1].max() - y0)]
