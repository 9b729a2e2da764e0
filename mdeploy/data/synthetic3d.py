"""Synthetic 3-D people: posed adult skeletons seen by random cameras, as a COCO-style dataset.

Each image is a 256x256 person crop (the input a MobileHumanPose-style model takes). The
person is a kinematic skeleton with an adult's bone lengths (a few subjects per dataset,
each with their own height and proportions, constant over all their poses), posed by joint
angles sampled within human limits: hips and shoulders flex, abduct and twist, knees bend
backward only (0-130 degrees) and elbows forward only (0-145 degrees), the spine and neck bend
a little. The body turns to any yaw, stands at 3-6.5 m from a camera that looks slightly up
or down, and the camera's focal length and principal point are chosen so the whole figure
lands inside the crop (as a crop around a detected person would frame it).

The figure is drawn as limbs of human widths ordered far to near (a nose marks the front of
the head), over a cluttered background. Labels are exact: the written 2-D joints are the
written 3-D joints (camera space, mm) through the written intrinsics (pinhole, in crop pixels,
continuous coordinates), so `load_coco3d` reads the file back with its cameras.

Every image is a pure function of (seed, index), like mdeploy's 2-D synthetic figures:
datasets are reproducible byte for byte. They train and exercise the 3-D path end to end;
accuracy on them says nothing about accuracy on photographs.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.camera import Camera
from mdeploy.keypoints import get_keypoint_set

GENERATOR = "mdeploy.synthetic3d/1"
SUPERSAMPLE = 2
MARGIN = 6.0  # pixels kept free at the crop's border

# An adult of 1.75 m (mm), before each subject's own scale and proportions.
BONES = {
    "hip": 125.0, "thigh": 440.0, "shin": 425.0, "foot": 150.0,
    "lower_spine": 230.0, "upper_spine": 260.0, "neck_base": 120.0, "head_centre": 170.0, "head_top": 280.0,
    "shoulder": 175.0, "upper_arm": 290.0, "forearm": 260.0, "hand": 90.0,
}

# Joint-angle limits in degrees: (low, high).
LIMITS = {
    "hip_flexion": (-25.0, 110.0),
    "hip_abduction": (-10.0, 40.0),
    "hip_twist": (-25.0, 25.0),
    "knee": (0.0, 130.0),
    "ankle": (-20.0, 30.0),
    "shoulder_flexion": (-40.0, 160.0),
    "shoulder_abduction": (-10.0, 150.0),
    "shoulder_twist": (-60.0, 60.0),
    "elbow": (0.0, 145.0),
    "wrist": (-30.0, 30.0),
    "spine_flexion": (-10.0, 30.0),
    "spine_bend": (-12.0, 12.0),
    "spine_twist": (-20.0, 20.0),
    "neck_flexion": (-20.0, 30.0),
    "neck_twist": (-40.0, 40.0),
}

SKIN = [(255, 224, 196), (234, 192, 160), (198, 134, 100), (141, 85, 54), (92, 58, 38), (241, 194, 125)]


@dataclass(frozen=True)
class Synth3DConfig:
    count: int
    seed: int = 0
    size: int = 256
    keypoints: str = "muco21"  # or "h36m17"
    subjects: int = 5
    quality: int = 92  # JPEG quality


# ---------------------------------------------------------------------------- kinematics

def _rx(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def subject_bones(seed: int, subject: int) -> dict[str, float]:
    """One subject's bone lengths (mm): a height of 1.55-1.95 m and +-4 % per bone, same on both sides."""
    rng = np.random.default_rng([seed, 1_000_003, subject])
    scale = rng.uniform(1550.0, 1950.0) / 1750.0
    return {name: float(length * scale * rng.uniform(0.96, 1.04)) for name, length in BONES.items()}


def sample_angles(rng: np.random.Generator) -> dict[str, float]:
    """Joint angles (degrees) within LIMITS, per side where the joint has two."""
    angles: dict[str, float] = {}
    for name, (lo, hi) in LIMITS.items():
        sides = ("right", "left") if name.split("_")[0] in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist") else ("",)
        for side in sides:
            key = f"{side}_{name}" if side else name
            if name in ("knee", "elbow") and rng.random() < 0.35:
                angles[key] = float(rng.uniform(lo, lo + 0.25 * (hi - lo)))  # straight-ish limbs are common
            else:
                angles[key] = float(rng.uniform(lo, hi))
    return angles


def pose_joints(bones: dict[str, float], angles: dict[str, float]) -> dict[str, np.ndarray]:
    """Every canonical joint the 3-D sets use, in the body frame (mm, pelvis at the origin).

    Body frame: x toward the person's left, y up, z forward (the way the person faces).
    Each segment's frame is its parent's rotated by the segment's joint angles, so a hinge
    (knee, elbow) bends in its limb's own plane whatever the hip or shoulder did.
    """
    j: dict[str, np.ndarray] = {"pelvis": np.zeros(3)}
    pelvis = np.eye(3)
    down = np.array([0.0, -1.0, 0.0])
    up = -down
    for side, s in (("right", -1.0), ("left", 1.0)):
        hip = pelvis @ np.array([s * bones["hip"], 0.0, 0.0])
        thigh = pelvis @ _rz(s * angles[f"{side}_hip_abduction"]) @ _rx(-angles[f"{side}_hip_flexion"]) @ _ry(s * angles[f"{side}_hip_twist"])
        shin = thigh @ _rx(angles[f"{side}_knee"])  # the knee bends backward
        foot = shin @ _rx(-90.0 + angles[f"{side}_ankle"])  # the foot points forward
        j[f"{side}_hip"] = hip
        j[f"{side}_knee"] = hip + thigh @ down * bones["thigh"]
        j[f"{side}_ankle"] = j[f"{side}_knee"] + shin @ down * bones["shin"]
        j[f"{side}_toe"] = j[f"{side}_ankle"] + foot @ down * bones["foot"]
    lower = pelvis @ _rx(-angles["spine_flexion"] / 2) @ _rz(angles["spine_bend"] / 2) @ _ry(angles["spine_twist"] / 2)
    j["spine"] = lower @ up * bones["lower_spine"]
    chest = lower @ _rx(-angles["spine_flexion"] / 2) @ _rz(angles["spine_bend"] / 2) @ _ry(angles["spine_twist"] / 2)
    j["thorax"] = j["spine"] + chest @ up * bones["upper_spine"]
    neck = chest @ _rx(-angles["neck_flexion"]) @ _ry(angles["neck_twist"])
    j["neck_base"] = j["thorax"] + neck @ np.array([0.0, bones["neck_base"], 0.35 * bones["neck_base"]])
    j["head_centre"] = j["thorax"] + neck @ np.array([0.0, bones["head_centre"], 0.12 * bones["head_centre"]])
    j["head_top"] = j["thorax"] + neck @ np.array([0.0, bones["head_top"], 0.03 * bones["head_top"]])
    for side, s in (("right", -1.0), ("left", 1.0)):
        shoulder = j["thorax"] + chest @ np.array([s * bones["shoulder"], -0.1 * bones["shoulder"], 0.0])
        upper = chest @ _rz(s * angles[f"{side}_shoulder_abduction"]) @ _rx(-angles[f"{side}_shoulder_flexion"]) @ _ry(
            s * angles[f"{side}_shoulder_twist"]
        )
        fore = upper @ _rx(-angles[f"{side}_elbow"])  # the elbow bends forward
        hand = fore @ _rx(-angles[f"{side}_wrist"])
        j[f"{side}_shoulder"] = shoulder
        j[f"{side}_elbow"] = shoulder + upper @ down * bones["upper_arm"]
        j[f"{side}_wrist"] = j[f"{side}_elbow"] + fore @ down * bones["forearm"]
        j[f"{side}_hand"] = j[f"{side}_wrist"] + hand @ down * bones["hand"]
    j["_nose"] = j["head_centre"] + neck @ np.array([0.0, 0.0, 0.55 * bones["head_centre"]])  # drawing cue only
    return j


# ---------------------------------------------------------------------------- a sample

@dataclass(frozen=True)
class Person3D:
    joints: np.ndarray  # [K, 3] camera space (mm)
    keypoints: np.ndarray  # [K, 3] x, y, v in crop pixels
    camera: Camera
    subject: int
    angles: dict
    body: dict  # every joint of the skeleton (and the nose, for drawing) in camera space


def sample_person(seed: int, index: int, keypoints: str = "muco21", size: int = 256, subjects: int = 5) -> Person3D:
    """The person of image `index`: pose, camera and projection (no pixels drawn)."""
    kps = get_keypoint_set(keypoints)
    rng = np.random.default_rng([seed, index])
    subject = int(rng.integers(subjects))
    bones = subject_bones(seed, subject)
    angles = sample_angles(rng)
    body = pose_joints(bones, angles)
    # Body frame -> camera frame: turn the body (yaw, a little lean), face it to the camera
    # (x stays x, y up becomes y down, forward becomes toward the camera), tilt the camera.
    turn = _ry(rng.uniform(0.0, 360.0)) @ _rx(rng.uniform(-8.0, 8.0)) @ _rz(rng.uniform(-8.0, 8.0))
    rot = _rx(rng.uniform(-15.0, 15.0)) @ np.diag([1.0, -1.0, -1.0]) @ turn
    # The camera is fitted to the whole skeleton, so a person is the same whichever set labels it.
    names = list(body)
    real = np.array([not n.startswith("_") for n in names])
    local = np.stack([rot @ body[n] for n in names])
    depth = rng.uniform(3000.0, 6500.0)
    cx, cy = size / 2 + rng.uniform(-30.0, 30.0, 2)
    target = size / 2 + rng.uniform(-10.0, 10.0, 2)
    fill = rng.uniform(0.7, 0.9)
    shift = rng.uniform(-0.04, 0.04, 2) * size  # the box centre is off the crop centre a little
    focal = 1000.0
    for step in range(60):  # choose the focal length and the root's place so the figure fills and fits the crop
        root = np.array([(target[0] - cx) / focal * depth, (target[1] - cy) / focal * depth, depth])
        pts = local + root
        uv = pts[real, :2] / pts[real, 2:] * focal + np.array([cx, cy])
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        if step >= 40:  # settled: shrink until every joint is inside
            if (lo >= MARGIN).all() and (hi <= size - MARGIN).all():
                break
            focal *= 0.97
            continue
        target = target + (size / 2 + shift - (lo + hi) / 2)
        focal *= fill * (size - 2 * MARGIN) / max(float(np.max(hi - lo)), 1e-6)
    camera = Camera(float(focal), float(focal), float(cx), float(cy))
    placed = dict(zip(names, pts))
    joints = np.stack([placed[n] for n in kps.names])
    uv = camera.project(joints)
    vis = np.where(((uv >= 0) & (uv < size)).all(axis=1), 2.0, 0.0)
    return Person3D(joints, np.concatenate([uv, vis[:, None]], axis=1), camera, subject, angles, placed)


# ---------------------------------------------------------------------------- drawing

def _colour(rng, lo=0, hi=255) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _capsule(draw, a, b, width, fill) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6) * width / 2
    draw.polygon([tuple(a + n), tuple(b + n), tuple(b - n), tuple(a - n)], fill=fill)
    r = width / 2
    for c in (a, b):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)


# Limbs drawn as capsules: (joint a, joint b, radius mm, part) - part picks the colour.
_LIMBS = (
    ("right_hip", "right_knee", 75, "legs"), ("right_knee", "right_ankle", 55, "legs"), ("right_ankle", "right_toe", 40, "shoes"),
    ("left_hip", "left_knee", 75, "legs"), ("left_knee", "left_ankle", 55, "legs"), ("left_ankle", "left_toe", 40, "shoes"),
    ("right_shoulder", "right_elbow", 50, "shirt"), ("right_elbow", "right_wrist", 40, "arms"),
    ("left_shoulder", "left_elbow", 50, "shirt"), ("left_elbow", "left_wrist", 40, "arms"),
    ("right_wrist", "right_hand", 40, "skin"), ("left_wrist", "left_hand", 40, "skin"),
    ("thorax", "head_centre", 45, "skin"),
)


def render(seed: int, index: int, keypoints: str = "muco21", size: int = 256, subjects: int = 5) -> tuple[np.ndarray, Person3D]:
    """One crop (RGB uint8 [size, size, 3]) and its person."""
    from PIL import Image, ImageDraw

    person = sample_person(seed, index, keypoints, size, subjects)
    rng = np.random.default_rng([seed, index, 7])
    s = size * SUPERSAMPLE
    top, bottom = np.asarray(_colour(rng), np.float32), np.asarray(_colour(rng), np.float32)
    t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to((top * (1 - t) + bottom * t).astype(np.uint8), (s, s, 3))))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 12))):
        c = _colour(rng)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * s
        w, h = rng.uniform(0.05, 0.5, 2) * s
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x0 + w, y0 + h], fill=c)

    body = person.body  # every joint, even those the keypoint set lacks (h36m17 has no hands or toes)
    cam = person.camera
    colours = {"skin": SKIN[rng.integers(len(SKIN))], "shirt": _colour(rng), "legs": _colour(rng, 0, 160), "shoes": _colour(rng, 0, 80)}
    colours["arms"] = colours["shirt"] if rng.random() < 0.5 else colours["skin"]
    items = []  # (depth, kind, data): drawn far to near
    for a, b, radius, part in _LIMBS:
        za = (body[a][2] + body[b][2]) / 2
        items.append((za, "limb", (a, b, radius, colours[part])))
    torso = ["right_shoulder", "left_shoulder", "left_hip", "right_hip"]
    items.append((float(np.mean([body[n][2] for n in torso])), "torso", torso))
    items.append((float(body["head_centre"][2]), "head", None))
    items.sort(key=lambda item: -item[0])
    px = {n: cam.project(p) * SUPERSAMPLE for n, p in body.items()}
    scale = cam.fx * SUPERSAMPLE
    for depth, kind, data in items:
        if kind == "limb":
            a, b, radius, colour = data
            _capsule(draw, px[a], px[b], 2 * radius * scale / depth, colour)
        elif kind == "torso":
            draw.polygon([tuple(px[n]) for n in data], fill=colours["shirt"])
        else:
            centre = (body["head_centre"] + body["head_top"]) / 2
            c = cam.project(centre) * SUPERSAMPLE
            r = 105.0 * scale / centre[2]
            draw.ellipse([c[0] - r, c[1] - r * 1.15, c[0] + r, c[1] + r * 1.15], fill=colours["skin"])
            if body["_nose"][2] < centre[2]:  # the face is toward the camera: draw the nose
                nose = cam.project(body["_nose"]) * SUPERSAMPLE
                nr = max(r * 0.15, 1.0)
                draw.ellipse([nose[0] - nr, nose[1] - nr, nose[0] + nr, nose[1] + nr], fill=(120, 60, 50))
            else:
                draw.ellipse([c[0] - r * 0.9, c[1] - r * 1.05, c[0] + r * 0.9, c[1] + r * 0.6], fill=_colour(rng, 0, 100))
    small = img.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(small).astype(np.float32) * rng.uniform(0.75, 1.15) + rng.uniform(-20, 20)
    arr += rng.normal(0, rng.uniform(2, 7), arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8), person


def _encode(seed: int, index: int, config: Synth3DConfig) -> tuple[bytes, Person3D]:
    from PIL import Image

    rgb, person = render(seed, index, config.keypoints, config.size, config.subjects)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=config.quality, subsampling=0)
    return buf.getvalue(), person


def _chunk(args) -> list[tuple[int, bytes, Person3D]]:
    config, indices = args
    return [(i, *_encode(config.seed, i, config)) for i in indices]


def generate(config: Synth3DConfig, out_dir: Path, workers: int | None = None, progress=None) -> dict:
    """Write `images/NNNNNN.jpg` and `annotations.json` (COCO keypoints + 3-D + cameras) into `out_dir`."""
    import os

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    kps = get_keypoint_set(config.keypoints)
    workers = workers or min(4, os.cpu_count() or 1)
    indices = list(range(config.count))
    jobs = [(config, indices[i : i + 32]) for i in range(0, len(indices), 32)]
    images, annotations = [], []
    done = 0
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_chunk, jobs) if pool else map(_chunk, jobs)
        for chunk in results:
            for index, data, person in chunk:
                name = f"{index:06d}.jpg"
                (out_dir / "images" / name).write_bytes(data)
                images.append({"id": index + 1, "file_name": name, "width": config.size, "height": config.size,
                               "camera": {"f": [round(person.camera.fx, 6), round(person.camera.fy, 6)],
                                          "c": [round(person.camera.cx, 6), round(person.camera.cy, 6)]}})
                annotations.append(_annotation(index + 1, person))
            done += len(chunk)
            if progress:
                progress(done, config.count)
    finally:
        if pool:
            pool.shutdown()
    from mdeploy.data.synthetic import write_annotations

    info = {"description": "mdeploy synthetic 3-D people", "generator": GENERATOR, "seed": config.seed,
            "count": config.count, "units": "mm", "keypoints_3d": "camera space: x right, y down, z forward"}
    return write_annotations(out_dir, info, images, annotations, kps, root=kps.root)


def _annotation(image_id: int, person: Person3D) -> dict:
    """2-D joints are the rounded camera's projection of the rounded 3-D joints: exact labels on disk."""
    cam = Camera(*(round(v, 6) for v in (person.camera.fx, person.camera.fy, person.camera.cx, person.camera.cy)))
    joints = np.round(person.joints, 3)
    uv = cam.project(joints)
    kp = np.concatenate([np.round(uv, 4), person.keypoints[:, 2:3]], axis=1)
    labelled = kp[:, 2] > 0
    x0, y0 = kp[labelled, 0].min(), kp[labelled, 1].min()
    bbox = [float(x0), float(y0), float(kp[labelled, 0].max() - x0), float(kp[labelled, 1].max() - y0)]
    return {
        "id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
        "keypoints": [float(v) for v in kp.reshape(-1)],
        "keypoints_3d": [float(v) for v in joints.reshape(-1)],
        "num_keypoints": int(labelled.sum()),
        "bbox": [round(v, 2) for v in bbox],
        "area": round(bbox[2] * bbox[3], 2),
        "subject": person.subject,
    }
