"""Synthetic people: articulated figures with exact 14-keypoint labels, as a COCO dataset on disk.

Each image holds one figure facing the camera, built from a 2-D skeleton with plausible
proportions and joint angles (limb angles sampled within human ranges, elbows and knees
bending one way), then scaled, rotated and placed on a cluttered background (gradients,
shapes, stripes, distractor limbs, noise). Limbs have width, clothing has colours and
textures, the head has a face (the cue that tells the figure's left from its right).
Some figures are cut by the image border (their outside joints are unlabelled, v=0) and
some are partly hidden behind occluders (joints under them are labelled, v=1).

Every image is a pure function of (seed, index): datasets are reproducible byte for byte
and can be generated in parallel. Accuracy on these figures says nothing about accuracy
on photographs of people: they exist to exercise training, export and deployment end to
end without downloading a dataset.
"""

from __future__ import annotations

import io
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.keypoints import get_keypoint_set

GENERATOR = "mdeploy.synthetic/1"
SUPERSAMPLE = 2  # draw at 2x and downsample: smooth, anti-aliased edges like a photo

# aic14 indices
HEAD, NECK, RSH, REL, RWR, LSH, LEL, LWR, RHIP, RKNE, RANK, LHIP, LKNE, LANK = range(14)


@dataclass(frozen=True)
class SynthConfig:
    count: int
    seed: int = 0
    size: int = 192
    quality: int = 92  # JPEG quality


def _unit(angle_deg: float) -> np.ndarray:
    """Direction at `angle_deg` from straight down (figure coordinates: x right, y down)."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)])


def skeleton(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """14 joints in figure units (height ~1, pelvis at the origin, y down) + part sizes."""
    p = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
    torso = p(0.27, 0.33)
    lean = p(-12, 12)
    up = -_unit(lean)  # from pelvis towards neck
    side = np.array([-up[1], up[0]])  # towards the figure's left = image right (facing the camera)
    neck = up * torso
    head_len = p(0.15, 0.19)
    head_top = neck - _unit(lean + p(-15, 15)) * head_len  # the head tilts a little
    shoulder = p(0.09, 0.12)
    hip = p(0.065, 0.085)
    j = np.zeros((14, 2))
    j[NECK], j[HEAD] = neck, head_top
    j[RSH], j[LSH] = neck - side * shoulder + up * -0.02, neck + side * shoulder + up * -0.02
    j[RHIP], j[LHIP] = -side * hip, side * hip
    upper_arm, forearm = p(0.15, 0.18), p(0.13, 0.16)
    thigh, shin = p(0.22, 0.26), p(0.21, 0.25)
    for sh, el, wr, sgn in ((RSH, REL, RWR, -1), (LSH, LEL, LWR, 1)):
        # Abduction measured from hanging down, outward positive; sometimes raised overhead.
        abd = p(-10, 100) if rng.random() < 0.8 else p(100, 170)
        bend = p(0, 140) * (1 if rng.random() < 0.7 else -0.4)
        a_upper = lean + sgn * abd
        j[el] = j[sh] + _unit(a_upper) * upper_arm
        j[wr] = j[el] + _unit(a_upper + sgn * bend) * forearm
    stride = p(-25, 25)
    for hp, kn, an, sgn in ((RHIP, RKNE, RANK, -1), (LHIP, LKNE, LANK, 1)):
        abd = p(-8, 35) + sgn * stride * 0.3
        knee = p(0, 70) if rng.random() < 0.8 else p(70, 120)
        a_thigh = lean * 0.3 + sgn * abd
        j[kn] = j[hp] + _unit(a_thigh) * thigh
        j[an] = j[kn] + _unit(a_thigh - sgn * knee * 0.5) * shin
    widths = {
        "upper_arm": p(0.045, 0.06),
        "forearm": p(0.035, 0.05),
        "thigh": p(0.06, 0.08),
        "shin": p(0.045, 0.06),
        "head": head_len * p(0.38, 0.45),
    }
    return j, widths


def _colour(rng, lo=0, hi=255) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


SKIN = [(255, 224, 196), (234, 192, 160), (198, 134, 100), (141, 85, 54), (92, 58, 38), (241, 194, 125)]


def _background(rng, draw, size: int) -> None:
    s = size * SUPERSAMPLE
    for _ in range(int(rng.integers(6, 16))):
        kind = rng.integers(0, 4)
        c = _colour(rng)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * s
        w, h = rng.uniform(0.05, 0.6, 2) * s
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=c)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=c)
        elif kind == 2:
            draw.line([x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h], fill=c, width=int(rng.integers(2, 12) * SUPERSAMPLE))
        else:
            pts = [tuple(rng.uniform(-0.1, 1.1, 2) * s) for _ in range(int(rng.integers(3, 6)))]
            draw.polygon(pts, fill=c)


def _stripes(rng, size: int, colour, base):
    """A striped texture image (PIL) at drawing resolution, drawn as parallel bands."""
    from PIL import Image, ImageDraw

    s = size * SUPERSAMPLE
    tex = Image.new("RGB", (s, s), tuple(int(v) for v in base))
    draw = ImageDraw.Draw(tex)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(4, 14) * SUPERSAMPLE
    d = np.array([math.cos(angle), math.sin(angle)])  # across the bands
    along = np.array([-d[1], d[0]]) * s * 1.5
    centre = np.array([s / 2, s / 2])
    for k in np.arange(-s, s, period):
        c = centre + d * k
        draw.line([tuple(c - along), tuple(c + along)], fill=colour, width=max(1, int(period / 2)))
    return tex


def _capsule(draw, a, b, width, fill) -> None:
    """A limb: thick segment with round ends."""
    a, b = np.asarray(a), np.asarray(b)
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6) * width / 2
    draw.polygon([tuple(a + n), tuple(b + n), tuple(b - n), tuple(a - n)], fill=fill)
    r = width / 2
    for c in (a, b):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)


def draw_figure(img, rng: np.random.Generator, pts: np.ndarray, w: dict, size: int):
    """Draw one figure (legs, torso, arms, neck, head with a face, clothing texture) onto `img`.

    `pts` are its 14 aic14 joints and `w` its part widths, both at drawing resolution
    (SUPERSAMPLE x `size`). Returns the image (a new one when the clothing is textured) and
    the head's geometry: centre, radius, `axis` (unit vector neck -> head top) and `across`
    (unit vector towards the figure's left, i.e. image right for a figure facing the camera).
    """
    from PIL import Image, ImageDraw

    s = size * SUPERSAMPLE
    draw = ImageDraw.Draw(img)
    skin = SKIN[rng.integers(len(SKIN))]
    shirt, pants = _colour(rng), _colour(rng, 0, 160)
    sleeve_long = rng.random() < 0.5
    legs_long = rng.random() < 0.7
    body = Image.new("L", (s, s), 0)
    bdraw = ImageDraw.Draw(body)  # clothing mask for textures

    order = [(RHIP, RKNE, RANK), (LHIP, LKNE, LANK)]
    rng.shuffle(order)
    for hp, kn, an in order:
        _capsule(draw, pts[hp], pts[kn], w["thigh"], pants)
        _capsule(bdraw, pts[hp], pts[kn], w["thigh"], 255)
        _capsule(draw, pts[kn], pts[an], w["shin"], pants if legs_long else skin)
        if legs_long:
            _capsule(bdraw, pts[kn], pts[an], w["shin"], 255)
        foot = pts[an] + np.array([0, w["shin"] * 0.3])
        draw.ellipse([foot[0] - w["shin"] * 0.7, foot[1] - w["shin"] * 0.4, foot[0] + w["shin"] * 0.7, foot[1] + w["shin"] * 0.4], fill=_colour(rng, 0, 90))
    torso = [pts[RSH], pts[LSH], pts[LHIP] + (pts[LHIP] - pts[RHIP]) * 0.15, pts[RHIP] - (pts[LHIP] - pts[RHIP]) * 0.15]
    draw.polygon([tuple(p) for p in torso], fill=shirt)
    bdraw.polygon([tuple(p) for p in torso], fill=255)
    arms = [(RSH, REL, RWR), (LSH, LEL, LWR)]
    rng.shuffle(arms)
    for sh, el, wr in arms:
        _capsule(draw, pts[sh], pts[el], w["upper_arm"], shirt)
        _capsule(bdraw, pts[sh], pts[el], w["upper_arm"], 255)
        _capsule(draw, pts[el], pts[wr], w["forearm"], shirt if sleeve_long else skin)
        if sleeve_long:
            _capsule(bdraw, pts[el], pts[wr], w["forearm"], 255)
        r = w["forearm"] * 0.6
        draw.ellipse([pts[wr][0] - r, pts[wr][1] - r, pts[wr][0] + r, pts[wr][1] + r], fill=skin)
    # Neck and head with a face (eyes and mouth: the figure faces the camera).
    _capsule(draw, pts[NECK], pts[NECK] + (pts[HEAD] - pts[NECK]) * 0.3, w["forearm"] * 1.1, skin)
    hc = pts[NECK] + (pts[HEAD] - pts[NECK]) * 0.55
    hr = w["head"]
    draw.ellipse([hc[0] - hr, hc[1] - hr * 1.15, hc[0] + hr, hc[1] + hr * 1.15], fill=skin)
    hair = _colour(rng, 0, 120)
    axis = (pts[HEAD] - pts[NECK]) / (np.linalg.norm(pts[HEAD] - pts[NECK]) + 1e-6)
    across = np.array([-axis[1], axis[0]])
    hair_c = hc + axis * hr * 0.55
    draw.ellipse([hair_c[0] - hr * 0.95, hair_c[1] - hr * 0.6, hair_c[0] + hr * 0.95, hair_c[1] + hr * 0.6], fill=hair)
    for side in (-1, 1):
        e = hc + axis * hr * 0.1 + across * side * hr * 0.38
        er = max(hr * 0.13, 1.0)
        draw.ellipse([e[0] - er, e[1] - er, e[0] + er, e[1] + er], fill=(20, 20, 20))
    m = hc - axis * hr * 0.45
    draw.line([tuple(m - across * hr * 0.25), tuple(m + across * hr * 0.25)], fill=(120, 30, 30), width=max(1, int(hr * 0.12)))

    if rng.random() < 0.5:  # textured clothing: half-blend stripes inside the clothing mask
        tex = Image.blend(_stripes(rng, size, _colour(rng), shirt), img, 0.5)
        img = Image.composite(tex, img, body)
    return img, {"centre": hc, "radius": hr, "axis": axis, "across": across}


def render(seed: int, index: int, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """One image (RGB uint8 [size, size, 3]) and its keypoints [14, 3] (x, y, v) in pixels."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng([seed, index])
    s = size * SUPERSAMPLE
    top, bottom = np.asarray(_colour(rng), np.float32), np.asarray(_colour(rng), np.float32)
    t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    gradient = (top * (1 - t) + bottom * t).astype(np.uint8)  # [s, 1, 3]
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(gradient, (s, s, 3))))
    draw = ImageDraw.Draw(img)
    _background(rng, draw, size)

    joints, widths = skeleton(rng)
    # Place the figure: height a fraction of the image, rotated, shifted (sometimes out of frame).
    extent = joints.max(axis=0) - joints.min(axis=0)
    height = rng.uniform(0.5, 0.92) * s / max(extent[1], 0.6)
    angle = math.radians(rng.uniform(-25, 25))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = (joints.max(axis=0) + joints.min(axis=0)) / 2
    shift = rng.uniform(-0.12, 0.12, 2) * s if rng.random() < 0.85 else rng.uniform(-0.4, 0.4, 2) * s
    pts = ((joints - centre) @ rot.T) * height + np.array([s / 2, s / 2]) + shift

    # Distractor limbs in the background: skin- and cloth-coloured capsules that are not a person.
    for _ in range(int(rng.integers(0, 3))):
        a = rng.uniform(0, 1, 2) * s
        b = a + rng.uniform(-0.3, 0.3, 2) * s
        _capsule(draw, a, b, rng.uniform(0.02, 0.05) * s, SKIN[rng.integers(len(SKIN))] if rng.random() < 0.5 else _colour(rng))

    w = {k: v * height for k, v in widths.items()}
    img, _ = draw_figure(img, rng, pts, w, size)

    # Occluders in front of the figure.
    occluded = np.zeros((s, s), bool)
    if rng.random() < 0.3:
        omask = Image.new("L", (s, s), 0)
        mdraw = ImageDraw.Draw(omask)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 3))):
            c = pts[rng.integers(14)] + rng.uniform(-0.1, 0.1, 2) * s
            half = rng.uniform(0.06, 0.16, 2) * s
            box = [c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]]
            boxy = rng.random() < 0.5
            (draw.rectangle if boxy else draw.ellipse)(box, fill=_colour(rng))
            (mdraw.rectangle if boxy else mdraw.ellipse)(box, fill=255)
        occluded = np.asarray(omask) > 0

    # Light, noise, blur: what a camera adds (at output resolution).
    small = img.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.3:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(small).astype(np.float32) * rng.uniform(0.7, 1.2) + rng.uniform(-25, 25)
    arr += rng.normal(0, rng.uniform(2, 9), arr.shape).astype(np.float32)
    out = np.clip(arr, 0, 255).astype(np.uint8)

    keypoints = np.zeros((14, 3), np.float32)
    for k, (x, y) in enumerate(pts):
        inside = 0 <= x < s and 0 <= y < s
        if not inside:
            continue  # outside the frame: unlabelled, as in COCO
        hidden = occluded[int(y), int(x)]
        keypoints[k] = (x / SUPERSAMPLE, y / SUPERSAMPLE, 1 if hidden else 2)
    return out, keypoints


def _encode(seed: int, index: int, size: int, quality: int) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    rgb, kps = render(seed, index, size)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue(), kps


def _chunk(args) -> list[tuple[int, bytes, np.ndarray]]:
    seed, indices, size, quality = args
    return [(i, *_encode(seed, i, size, quality)) for i in indices]


def generate(config: SynthConfig, out_dir: Path, workers: int | None = None, progress=None) -> dict:
    """Write `images/NNNNNN.jpg` and `annotations.json` (COCO keypoints) into `out_dir`."""
    import os

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    kps_set = get_keypoint_set("aic14")
    workers = workers or min(4, os.cpu_count() or 1)
    indices = list(range(config.count))
    chunks = [indices[i : i + 64] for i in range(0, len(indices), 64)]
    jobs = [(config.seed, c, config.size, config.quality) for c in chunks]
    images, annotations = [], []
    done = 0
    results = map(_chunk, jobs) if workers == 1 else ProcessPoolExecutor(workers).map(_chunk, jobs)
    for chunk in results:
        for index, data, kps in chunk:
            name = f"{index:06d}.jpg"
            (out_dir / "images" / name).write_bytes(data)
            images.append({"id": index + 1, "file_name": name, "width": config.size, "height": config.size})
            annotations.append(_annotation(index + 1, kps))
        done += len(chunk)
        if progress:
            progress(done, config.count)
    info = {"description": "mdeploy synthetic figures", "generator": GENERATOR, "seed": config.seed, "count": config.count}
    return write_annotations(out_dir, info, images, annotations, kps_set)


def write_annotations(out_dir: Path, info: dict, images: list, annotations: list, keypoints, **category) -> dict:
    """Write `out_dir/annotations.json`: a COCO-keypoints file with one person category named by
    `keypoints` (names and 1-based skeleton; `category` adds fields, e.g. a 3-D set's root)."""
    person = {"id": 1, "name": "person", "keypoints": list(keypoints.names), **category,
              "skeleton": [[a + 1, b + 1] for a, b in keypoints.skeleton]}
    data = {"info": info, "images": images, "annotations": annotations, "categories": [person]}
    (Path(out_dir) / "annotations.json").write_text(json.dumps(data) + "\n")
    return data


def _annotation(image_id: int, kps: np.ndarray) -> dict:
    labelled = kps[:, 2] > 0
    xs, ys = kps[labelled, 0], kps[labelled, 1]
    if labelled.any():
        x0, y0 = float(xs.min()), float(ys.min())
        bbox = [x0, y0, float(xs.max()) - x0, float(ys.max()) - y0]
    else:
        bbox = [0.0, 0.0, 0.0, 0.0]
    return {
        "id": image_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
        "num_keypoints": int(labelled.sum()),
        "bbox": [round(v, 2) for v in bbox],
        "area": round(bbox[2] * bbox[3], 2),
    }
