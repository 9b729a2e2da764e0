"""MPII keypoints in the json layout of HRNet and mmpose: a list of people.

Each entry: `image` (file name), `joints` (16 x [x, y], MPII's 1-based pixel indices),
`joints_vis` (16 flags: 1 = labelled), `center` and `scale` (the person's box: a square
of 200 x scale pixels around center), optionally `head_box` ([x1, y1, x2, y2]). The file
has no keypoint names: its order is MPII's documented one (`mpii16` in
`mdeploy.keypoints`), mapped onto the model's set by those names like any named file.

Labelled joints count as visible (the layout has no separate occlusion flag). PCKh's head
size is 0.6 x the head-box diagonal (MPII's standard) where an entry has a head box, else
|head top - upper neck|, and the dataset's `head_rule` says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.data.coco import (
    HEAD_BOX,
    HEAD_TOP_UPPER_NECK,
    Dataset,
    Sample,
    _check_images,
    apply_mapping,
    choose_crop,
    head_size_of,
    read_json,
)
from mdeploy.errors import InputError
from mdeploy.keypoints import KeypointSet, get_keypoint_set, map_names

MPII = get_keypoint_set("mpii16")
PIXEL_STD = 200.0  # MPII's scale unit: a person of height 200 px has scale 1
REQUIRED = ("image", "joints", "joints_vis", "center", "scale")


def load_mpii(
    annotations: Path,
    images: Path,
    keypoints: KeypointSet,
    *,
    where: str | None = None,
    check_files: bool = True,
    crop: str = "person",
) -> Dataset:
    from mdeploy.limits import open_image

    annotations, images = Path(annotations), Path(images)
    data = read_json(annotations, where)
    if not isinstance(data, list):
        raise InputError(f"{annotations} is not an MPII json (expected a list of people with image, joints, joints_vis, center, scale)", where=where)
    if not images.is_dir():
        raise InputError(f"image folder not found: {images}", where=where)
    mapping = map_names(MPII.names, keypoints, source=annotations.name, where=where)
    head_joints = (MPII.names.index("head_top"), MPII.names.index("upper_neck"))
    sizes: dict[str, tuple[int, int]] = {}
    samples, skipped, per_image, rules = [], 0, {}, set()
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise InputError(f"{annotations.name}: entry {index} is not a mapping", where=where)
        absent = [k for k in REQUIRED if k not in entry]
        if absent:
            raise InputError(f"{annotations.name}: entry {index} ({entry.get('image', 'no image')}) lacks {', '.join(absent)}", where=where)
        try:
            joints = np.asarray(entry["joints"], np.float32).reshape(-1, 2)
            vis = np.asarray(entry["joints_vis"], np.float32).reshape(-1)
            cx, cy = (float(v) for v in entry["center"])
            scale = float(entry["scale"])
        except (TypeError, ValueError) as err:
            raise InputError(f"{annotations.name}: entry {index} has malformed joints, center or scale ({err})", where=where) from None
        if len(joints) != len(MPII) or len(vis) != len(MPII):
            raise InputError(f"{annotations.name}: entry {index} has {len(joints)} joints and {len(vis)} flags, expected {len(MPII)}", where=where)
        labelled = (vis > 0) & (joints[:, 0] > 0) & (joints[:, 1] > 0)
        raw = np.zeros((len(MPII), 3), np.float32)
        raw[:, :2] = joints - 0.5  # 1-based pixel index -> continuous coordinate of the pixel's centre
        raw[:, 2] = np.where(labelled, 2, 0)
        raw[~labelled, :2] = 0
        kps = apply_mapping(raw, mapping)
        if not (kps[:, 2] > 0).any() or scale <= 0:
            skipped += 1
            continue
        name = str(entry["image"])
        path = images / name
        if name not in sizes:
            try:
                with open_image(path, where=where) as img:  # the header only, within the pixel budget
                    sizes[name] = img.size
            except FileNotFoundError:
                if check_files:
                    raise InputError(f"an image named in {annotations.name} is missing from {images}: {name}", where=where) from None
                sizes[name] = (0, 0)
            except OSError as err:
                raise InputError(f"cannot read image {path}: {err}", where=where) from None
        width, height = sizes[name]
        head = entry.get("head_box")
        if head is not None:
            x1, y1, x2, y2 = (float(v) for v in head)
            head_size, rule = 0.6 * float(np.hypot(x2 - x1, y2 - y1)), HEAD_BOX
        else:
            head_size, rule = head_size_of(raw, head_joints), HEAD_TOP_UPPER_NECK
        rules.add(rule)
        side = PIXEL_STD * scale
        samples.append(Sample(path, int(width), int(height), kps, (cx - side / 2, cy - side / 2, side, side), head_size))
        per_image[name] = per_image.get(name, 0) + 1
    if not samples:
        raise InputError(f"{annotations.name}: no person with a labelled joint", where=where)
    if len(rules) > 1:
        raise InputError(f"{annotations.name}: some entries have a head_box and some do not; PCKh would mix two head sizes", where=where)
    if check_files:
        _check_images(samples, images, annotations.name, where)
    notes = [f"MPII json: keypoints in MPII's documented order (the file names none); {mapping.describe()}"]
    return Dataset(samples, choose_crop(crop, per_image), skipped, annotations, mapping, rules.pop(), "mpii", notes)
