"""Synthetic multi-person scenes: 2 to 5 overlapping figures with exact COCO keypoints.

Each scene draws several of the articulated figures of `mdeploy.data.synthetic` (the same
skeletons, clothing, faces and cluttered backgrounds) side by side, at different sizes,
overlapping their neighbours: figures drawn later stand in front, and a joint of an earlier
figure that a later one covers is labelled hidden (v=1); a joint outside the frame is
unlabelled (v=0), as in COCO. The face gives the COCO head points: the nose between the eyes
and the mouth, the eyes where they are drawn, the ears at the sides of the head. Keypoints
come in COCO-17 (`coco17`, what COCO files hold) or tf-openpose's COCO-18 (`coco18`, the
neck the mean of the shoulders, `paf_targets.coco17_to_coco18`).

A scene is a pure function of (seed, index): datasets are reproducible byte for byte. They
exist to exercise the multi-person models' training, export and decoding end to end; a
model trained on them says nothing about photographs of people.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.data import synthetic as single
from mdeploy.data.paf_targets import coco17_to_coco18
from mdeploy.errors import InputError
from mdeploy.keypoints import get_keypoint_set

GENERATOR = "mdeploy.synthetic_multi/1"
KEYPOINT_SETS = ("coco17", "coco18")
_STREAM = 17  # keeps scene random streams apart from the single-figure generator's


@dataclass(frozen=True)
class MultiConfig:
    count: int
    seed: int = 0
    size: int = 368  # square images, size x size
    people: tuple[int, int] = (2, 5)  # fewest and most figures per scene
    keypoints: str = "coco17"  # coco17 or coco18
    quality: int = 92  # JPEG quality

    def __post_init__(self):
        low, high = self.people
        if not 1 <= low <= high <= 8:
            raise InputError(f"people per scene must be 1 <= fewest <= most <= 8, got {list(self.people)}")
        if self.keypoints not in KEYPOINT_SETS:
            raise InputError(f"synthetic scenes are labelled in {' or '.join(KEYPOINT_SETS)}, not {self.keypoints!r}")
        if self.size < 64:
            raise InputError(f"scene size must be at least 64 pixels, got {self.size}")


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # RGB uint8 [size, size, 3]
    keypoints: np.ndarray  # [people, K, 3] (x, y, v) in pixels, in the order the figures were drawn
    boxes: np.ndarray  # [people, 4] x, y, w, h of each figure's silhouette (visible or not)
    areas: np.ndarray  # [people] visible silhouette pixels


def _coco17_points(pts: np.ndarray, head: dict) -> np.ndarray:
    """17 COCO points (drawing resolution) of one figure from its aic14 joints and its face."""
    names17 = get_keypoint_set("coco17").names
    aic = get_keypoint_set("aic14")
    out = np.zeros((17, 2))
    for k, name in enumerate(names17):
        if name in aic.names:
            out[k] = pts[aic.index(name)]
    centre, radius, axis, across = head["centre"], head["radius"], head["axis"], head["across"]
    face = {
        "nose": centre - axis * radius * 0.15,
        "left_eye": centre + axis * radius * 0.1 + across * radius * 0.38,  # `across` points to the figure's left
        "right_eye": centre + axis * radius * 0.1 - across * radius * 0.38,
        "left_ear": centre + across * radius * 0.95,
        "right_ear": centre - across * radius * 0.95,
    }
    for name, point in face.items():
        out[names17.index(name)] = point
    return out


def _silhouette(pts: np.ndarray, w: dict, head: dict, s: int) -> np.ndarray:
    """[s, s] bool: where the figure drawn by `single.draw_figure` covers the canvas (limbs, torso, head)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    for a, b, part in (
        (single.RHIP, single.RKNE, "thigh"), (single.LHIP, single.LKNE, "thigh"),
        (single.RKNE, single.RANK, "shin"), (single.LKNE, single.LANK, "shin"),
        (single.RSH, single.REL, "upper_arm"), (single.LSH, single.LEL, "upper_arm"),
        (single.REL, single.RWR, "forearm"), (single.LEL, single.LWR, "forearm"),
    ):
        single._capsule(draw, pts[a], pts[b], w[part], 1)
    hips = pts[single.LHIP] - pts[single.RHIP]
    torso = [pts[single.RSH], pts[single.LSH], pts[single.LHIP] + hips * 0.15, pts[single.RHIP] - hips * 0.15]
    draw.polygon([tuple(p) for p in torso], fill=1)
    single._capsule(draw, pts[single.NECK], head["centre"], w["forearm"] * 1.1, 1)
    c, r = head["centre"], head["radius"]
    draw.ellipse([c[0] - r, c[1] - r * 1.15, c[0] + r, c[1] + r * 1.15], fill=1)
    return np.asarray(mask, bool)


def render_scene(seed: int, index: int, size: int = 368, people: tuple[int, int] = (2, 5), keypoints: str = "coco17") -> Scene:
    """One scene: 2 to 5 (`people`) figures, overlapping, on a cluttered background."""
    from PIL import Image, ImageDraw, ImageFilter

    MultiConfig(count=1, seed=seed, size=size, people=people, keypoints=keypoints)  # validates the arguments
    rng = np.random.default_rng([seed, index, _STREAM])
    s = size * single.SUPERSAMPLE
    top, bottom = np.asarray(single._colour(rng), np.float32), np.asarray(single._colour(rng), np.float32)
    t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to((top * (1 - t) + bottom * t).astype(np.uint8), (s, s, 3))))
    single._background(rng, ImageDraw.Draw(img), size)

    count = int(rng.integers(people[0], people[1] + 1))
    # Figures side by side: slots across the image, each figure wider than its slot so that
    # neighbours overlap; sizes vary (near and far people), drawing order is random.
    slots = (np.arange(count) + 0.5) / count
    order = rng.permutation(count)
    points, masks, boxes = [], [], []
    for slot in slots[order]:
        joints, widths = single.skeleton(rng)
        extent = joints.max(axis=0) - joints.min(axis=0)
        height = rng.uniform(0.45, 0.85) * s / max(extent[1], 0.6)
        angle = math.radians(rng.uniform(-15, 15))
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        centre = (joints.max(axis=0) + joints.min(axis=0)) / 2
        place = np.array([slot + rng.uniform(-0.25, 0.25) / count, rng.uniform(0.4, 0.6)]) * s
        pts = ((joints - centre) @ rot.T) * height + place
        w = {k: v * height for k, v in widths.items()}
        img, head = single.draw_figure(img, rng, pts, w, size)
        silhouette = _silhouette(pts, w, head, s)
        ys, xs = np.nonzero(silhouette)
        boxes.append([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] if xs.size else [0, 0, 0, 0])
        points.append(_coco17_points(pts, head))
        masks.append(silhouette)

    # A camera: light, noise, a little blur, at output resolution.
    small = img.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.3:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(small).astype(np.float32) * rng.uniform(0.75, 1.15) + rng.uniform(-20, 20)
    arr += rng.normal(0, rng.uniform(2, 7), arr.shape).astype(np.float32)
    image = np.clip(arr, 0, 255).astype(np.uint8)

    kps = np.zeros((count, 17, 3), np.float32)
    areas = np.zeros(count, np.float32)
    for p, (pts17, own) in enumerate(zip(points, masks)):
        in_front = np.zeros((s, s), bool)
        for later in masks[p + 1:]:
            in_front |= later
        areas[p] = float((own & ~in_front).sum()) / single.SUPERSAMPLE**2
        for k, (x, y) in enumerate(pts17):
            if not (0 <= x < s and 0 <= y < s):
                continue  # outside the frame: unlabelled, as in COCO
            kps[p, k] = (x / single.SUPERSAMPLE, y / single.SUPERSAMPLE, 1 if in_front[int(y), int(x)] else 2)
    if keypoints == "coco18":
        kps = coco17_to_coco18(kps)
    return Scene(image, kps, np.asarray(boxes, np.float32) / single.SUPERSAMPLE, areas)


def _encode(args) -> tuple[int, bytes, Scene]:
    from PIL import Image

    seed, index, config = args
    scene = render_scene(seed, index, config.size, config.people, config.keypoints)
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="JPEG", quality=config.quality, subsampling=0)
    return index, buf.getvalue(), scene


def generate(config: MultiConfig, out_dir: Path, workers: int | None = None, progress=None) -> dict:
    """Write `images/NNNNNN.jpg` and `annotations.json` (COCO keypoints, several people per image)."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    kps_set = get_keypoint_set(config.keypoints)
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(config.seed, i, config) for i in range(config.count)]
    results = map(_encode, jobs) if workers == 1 else ProcessPoolExecutor(workers).map(_encode, jobs, chunksize=16)
    images, annotations = [], []
    for done, (index, data, scene) in enumerate(results, start=1):
        name = f"{index:06d}.jpg"
        (out_dir / "images" / name).write_bytes(data)
        images.append({"id": index + 1, "file_name": name, "width": config.size, "height": config.size})
        for kps, box, area in zip(scene.keypoints, scene.boxes, scene.areas):
            annotations.append(_annotation(len(annotations) + 1, index + 1, kps, box, area))
        if progress:
            progress(done, config.count)
    info = {"description": "mdeploy synthetic multi-person scenes", "generator": GENERATOR, "seed": config.seed,
            "count": config.count, "people": list(config.people)}
    return single.write_annotations(out_dir, info, images, annotations, kps_set)


def _annotation(ann_id: int, image_id: int, kps: np.ndarray, box: np.ndarray, area: float) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
        "num_keypoints": int((kps[:, 2] > 0).sum()),
        "bbox": [round(float(v), 2) for v in box],
        "area": round(float(area), 2),
    }
