"""3-D keypoint datasets: COCO-style files with 3-D joints and a camera per image, and the
Human3.6M layout (`h36m_coco.json` + `cameras.pkl`, as mmpose ships its samples).

Each person is a `Frame3D`: the image, its 2-D joints (pixels, COCO visibility), its 3-D
joints in the camera's space (millimetres: x right, y down, z forward) and the camera
(`mdeploy.camera.Camera`), joints in the order of the keypoint set asked for.

Two ways a file gives its 3-D joints, both read here:
- camera space with the intrinsics on the image entry ({"camera": {"f": [fx, fy], "c": [cx,
  cy]}}): what `mdeploy.data.synthetic3d` writes, and MuCo's layout (`f`, `c` on the image);
- world space with a camera table (Human3.6M): `cameras.pkl` maps (subject, camera id) to
  R, T, f, c, k, p; camera = R.T @ (world - T), and the projection includes the lens
  distortion (k radial, p tangential, Human3.6M's form). Without the distortion the shared
  frames' joints land up to 2.4 px off their 2-D labels; with it, within 0.001 px.

Human3.6M's 17 joints come in the dataset's fixed order (`h36m17`, pelvis the root). The
mmpose sample's own `categories[].keypoints` list calls joints 1-3 the left leg and 4-6 the
right one, opposite to Human3.6M's order; the 3-D joints settle it (the hips' left-right axis
agrees with the shoulders' only in Human3.6M's order, `side_agreement`), so the Human3.6M
reader reads by the dataset's order and its notes say where the file's names disagree.

Units: Human3.6M's files as mmpose ships them are in metres; a table whose camera positions
are under 100 units from the origin is taken as metres (a studio is not 10 cm wide) and
converted, and the notes say so. Files written by mdeploy say their units.

Camera files are pickles: they are read with an unpickler that builds nothing but plain
containers, numbers and numpy arrays, so a camera file cannot run code.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdeploy.camera import Camera
from mdeploy.data.coco import PERSON_MARGIN, read_json
from mdeploy.errors import InputError
from mdeploy.keypoints import KeypointSet, canonical_joint, get_keypoint_set, joint_correspondence, map_names
from mdeploy.limits import check_pixels

MAX_CAMERA_BYTES = 64 * 1024 * 1024
METRE_SCALE_LIMIT = 100.0  # camera positions nearer the origin than this are in metres
H36M_NAME = re.compile(r"^(?P<subject>S\d+)_(?P<action>.+)\.(?P<camera>\d+)_(?P<frame>\d+)\.\w+$")


@dataclass(frozen=True)
class Frame3D:
    image: Path
    width: int
    height: int
    keypoints: np.ndarray  # [K, 3] x, y, v: 2-D joints in image pixels, target set's order
    joints: np.ndarray  # [K, 3] camera space (mm); NaN where the file lacks the joint
    camera: Camera
    bbox: tuple[float, float, float, float]  # x, y, w, h
    subject: str = ""
    sequence: str = ""

    @property
    def visible(self) -> np.ndarray:
        """[K] joints labelled in 3-D."""
        return np.isfinite(self.joints).all(axis=1)

    def crop_box(self, margin: float = PERSON_MARGIN) -> tuple[float, float, float, float]:
        """The square person crop the model sees: the box grown by `margin` around its centre."""
        x, y, w, h = self.bbox
        side = max(w, h) * margin
        return (x + w / 2 - side / 2, y + h / 2 - side / 2, side, side)

    def projected(self) -> np.ndarray:
        """[K, 2] the 3-D joints through the camera (NaN where absent)."""
        out = np.full((len(self.joints), 2), np.nan)
        ok = self.visible
        out[ok] = self.camera.project(self.joints[ok])
        return out


@dataclass
class Dataset3D:
    frames: list[Frame3D]
    keypoints: KeypointSet
    source: Path
    layout: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def people(self) -> int:
        return len(self.frames)

    @property
    def images(self) -> int:
        return len({f.image for f in self.frames})

    def joints(self) -> np.ndarray:
        """[N, K, 3] camera-space joints (mm) of every frame."""
        return np.stack([f.joints for f in self.frames])

    def describe(self) -> str:
        return f"{self.people} people in {self.images} images ({self.layout}, {self.keypoints.name}, 3-D in camera space, mm)"


# ---------------------------------------------------------------------------- cameras

_NUMPY_CLASSES = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _Refused(pickle.UnpicklingError):
    """A class the camera reader will not build."""


class _DataUnpickler(pickle.Unpickler):
    """Builds containers, numbers, strings and numpy arrays; refuses every other class."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_CLASSES:
            import importlib

            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = module.replace("numpy.core.", "numpy._core.", 1)  # numpy 2 moved the module
            return getattr(importlib.import_module(module), name)
        raise _Refused(f"{module}.{name}")


def read_cameras(path: Path, *, where: str | None = None) -> dict[tuple[str, str], Camera]:
    """A Human3.6M camera table (mmpose's cameras.pkl): (subject, camera id) -> Camera (mm)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"camera file not found: {path}", where=where, hint="Human3.6M's layout keeps cameras.pkl beside the annotations")
    if path.stat().st_size > MAX_CAMERA_BYTES:
        raise InputError(f"{path} is larger than {MAX_CAMERA_BYTES >> 20} MiB: not a camera table", where=where)
    try:
        with open(path, "rb") as f:
            table = _DataUnpickler(f).load()
    except _Refused as err:
        raise InputError(f"{path.name}: holds a {err} object; mdeploy reads camera files of plain numbers and arrays only", where=where) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise InputError(f"{path.name} is not a readable camera table ({err})", where=where) from None
    if not isinstance(table, dict) or not table:
        raise InputError(f"{path.name}: expected a mapping of (subject, camera id) to camera parameters", where=where)
    cameras: dict[tuple[str, str], Camera] = {}
    for key, param in table.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(param, dict)):
            raise InputError(f"{path.name}: entry {key!r} is not (subject, camera id) -> parameters", where=where)
        cam = Camera.from_json({k: param.get(k) for k in ("f", "c", "k", "p", "R", "T") if param.get(k) is not None},
                               where=where, source=f"{path.name} {key}")
        if cam.rotation is None:
            raise InputError(f"{path.name}: camera {key} has no R and T (its pose)", where=where)
        cameras[(str(key[0]), str(key[1]))] = cam
    return cameras


def _in_mm(cam: Camera) -> tuple[Camera, float]:
    """The camera with its position in mm, and the factor the table's units need (1 or 1000)."""
    scale = 1000.0 if np.linalg.norm(cam.position) < METRE_SCALE_LIMIT else 1.0
    pos = tuple(float(v) * scale for v in cam.position)
    return Camera(cam.fx, cam.fy, cam.cx, cam.cy, cam.radial, cam.tangential, cam.rotation, pos), scale


def parse_h36m_name(name: str) -> dict | None:
    """'S1_Directions_1.54138969_000001.jpg' -> subject, action, camera id, frame; None if not one."""
    m = H36M_NAME.match(Path(name).name)
    if not m:
        return None
    return {"subject": m["subject"], "action": m["action"], "camera": m["camera"], "frame": int(m["frame"]),
            "folder": f"{m['subject']}/{m['subject']}_{m['action']}.{m['camera']}"}


def side_agreement(joints: np.ndarray, kps: KeypointSet) -> np.ndarray:
    """[N] cosine between the hips' and the shoulders' right-to-left axes (seen along the spine).

    Near 1 when left and right are named consistently; negative when one pair is swapped
    (a body cannot face opposite ways at the hips and shoulders).
    """
    j = np.asarray(joints, np.float64)
    if j.ndim == 2:
        j = j[None]
    idx = [kps.index(n) for n in ("right_hip", "left_hip", "right_shoulder", "left_shoulder")]
    if None in idx:
        raise InputError(f"keypoint set {kps.name} lacks hips or shoulders: no left/right check")
    rh, lh, rs, ls = (j[:, i] for i in idx)
    up = (rs + ls) / 2 - (rh + lh) / 2
    up /= np.linalg.norm(up, axis=1, keepdims=True)

    def across(a, b):
        d = a - b
        d -= (d * up).sum(axis=1, keepdims=True) * up
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    return (across(lh, rh) * across(ls, rs)).sum(axis=1)


# ---------------------------------------------------------------------------- readers

def _find_image(images: Path, file_name: str) -> Path:
    direct = images / file_name
    if direct.is_file():
        return direct
    parsed = parse_h36m_name(file_name)
    if parsed:
        nested = images / parsed["folder"] / Path(file_name).name
        if nested.is_file():
            return nested
    return direct


def _reorder(raw: np.ndarray, source: tuple[int | None, ...], fill: float) -> np.ndarray:
    out = np.full((len(source), raw.shape[1]), fill, np.float64)
    for k, j in enumerate(source):
        if j is not None:
            out[k] = raw[j]
    return out


def load_coco3d(
    annotations: Path,
    images: Path,
    keypoints: KeypointSet,
    *,
    cameras: dict[tuple[str, str], Camera] | None = None,
    file_keypoints: KeypointSet | None = None,
    where: str | None = None,
    check_files: bool = True,
    layout: str = "coco3d",
) -> Dataset3D:
    """A COCO-style file with `keypoints_3d` per annotation, mapped onto `keypoints`.

    The camera of an image comes from its own `camera` entry, or from `cameras` (keyed by
    the Human3.6M file name's subject and camera id); with a pose (R, T) the file's 3-D joints
    are taken as world coordinates, otherwise as camera space. `file_keypoints` reads the
    file's joints in that set's fixed order instead of by the file's names.
    """
    annotations, images = Path(annotations), Path(images)
    data = read_json(annotations, where)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise InputError(f"{annotations} is not a COCO keypoints file (needs 'images' and 'annotations')", where=where)
    if not images.is_dir():
        raise InputError(f"image folder not found: {images}", where=where)
    info = data.get("info") or {}
    notes: list[str] = []
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    file_names = tuple(categories[0]["keypoints"]) if categories else None
    if file_keypoints is not None:
        order = joint_correspondence(file_keypoints, keypoints)
        count = len(file_keypoints)
        if file_names is not None:
            if len(file_names) != count:
                raise InputError(f"{annotations.name} names {len(file_names)} keypoints; {file_keypoints.name} has {count}", where=where)
            disagree = [
                f"joint {i} is {n!r} in the file, {want} in {file_keypoints.name}"
                for i, (n, want) in enumerate(zip(file_names, file_keypoints.names)) if canonical_joint(n) != want
            ]
            if disagree:
                notes.append(f"read in {file_keypoints.name}'s fixed order; the file's names disagree: {'; '.join(disagree)}")
    elif file_names is not None:
        mapping = map_names(file_names, keypoints, source=annotations.name, where=where)
        order, count = mapping.source, len(file_names)
        notes.append(mapping.describe())
    else:
        raise InputError(f"{annotations.name}: no keypoint names (categories[].keypoints) and no fixed order given", where=where)
    if keypoints.root is None:
        notes.append(f"keypoint set {keypoints.name} has no root joint: root-aligned metrics need one")
    unit = str(info.get("units", "")).lower()
    file_scale = {"mm": 1.0, "m": 1000.0, "": None}.get(unit)
    if file_scale is None and unit:
        raise InputError(f"{annotations.name}: units {unit!r}; mdeploy reads 3-D joints in mm or m", where=where)
    by_id = {img.get("id"): img for img in data["images"] if isinstance(img, dict)}
    frames: list[Frame3D] = []
    scales_seen = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("iscrowd"):
            continue
        aid = ann.get("id")
        img = by_id.get(ann.get("image_id"))
        if img is None:
            raise InputError(f"{annotations.name}: annotation {aid} names unknown image {ann.get('image_id')}", where=where)
        try:
            kp2 = np.asarray(ann["keypoints"], np.float64).reshape(count, 3)
            kp3 = np.asarray(ann["keypoints_3d"], np.float64)
            kp3 = kp3.reshape(count, kp3.size // count)
        except KeyError as err:
            raise InputError(f"{annotations.name}: annotation {aid} has no {err.args[0]}", where=where) from None
        except (TypeError, ValueError):
            raise InputError(f"{annotations.name}: annotation {aid}'s keypoints do not hold {count} joints", where=where) from None
        if kp3.shape[1] not in (3, 4):
            raise InputError(f"{annotations.name}: annotation {aid}: keypoints_3d must be x, y, z (and v) per joint", where=where)
        labelled3 = kp3[:, 3] > 0 if kp3.shape[1] == 4 else np.ones(count, bool)
        points = kp3[:, :3]
        file_name = str(img.get("file_name", ""))
        parsed = parse_h36m_name(file_name) or {}
        if "camera" in img and isinstance(img["camera"], dict):
            camera = Camera.from_json(img["camera"], where=where, source=f"{annotations.name} image {img.get('id')}")
        elif cameras is not None:
            key = (parsed.get("subject"), parsed.get("camera"))
            if key not in cameras:
                raise InputError(f"{annotations.name}: no camera for image {file_name} (subject {key[0]}, camera {key[1]})", where=where)
            camera = cameras[key]
        else:
            raise InputError(
                f"{annotations.name}: image {file_name} has no camera",
                where=where, hint="3-D data needs each image's intrinsics: a 'camera' entry {f: [fx, fy], c: [cx, cy]} or a camera table",
            )
        if camera.rotation is not None and camera.position is not None:  # a posed camera: the joints are in world space
            camera, scale = _in_mm(camera)
            scale = file_scale or scale
            points = camera.world_to_camera(points * scale)
            camera = Camera(camera.fx, camera.fy, camera.cx, camera.cy, camera.radial, camera.tangential)
        else:
            scale = file_scale or 1.0
            points = points * scale
        scales_seen.add(scale)
        points[~labelled3] = np.nan
        joints = _reorder(points, order, np.nan)
        kps = _reorder(kp2, order, 0.0)
        try:
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{annotations.name}: image {img.get('id')} lacks width or height ({err})", where=where) from None
        check_pixels(width, height, f"{annotations.name}: image {file_name}", where=where)
        bbox = ann.get("bbox") or _bbox_of(kps)
        frames.append(
            Frame3D(_find_image(images, file_name), width, height, kps.astype(np.float32), joints, camera,
                    tuple(float(v) for v in bbox), str(ann.get("subject", parsed.get("subject", ""))),
                    str(parsed.get("action", ann.get("sequence", ""))))
        )
    if not frames:
        raise InputError(f"{annotations.name}: no annotated person", where=where)
    if 1000.0 in scales_seen and not file_scale:
        notes.append("3-D joints and camera positions read in metres (camera positions under 100 units from the origin); converted to mm")
    if check_files:
        missing = [f.image for f in frames if not f.image.is_file()]
        if missing:
            raise InputError(f"{len(missing)} image(s) named in {annotations.name} are missing, e.g. {missing[0]}", where=where)
    return Dataset3D(frames, keypoints, annotations, layout, notes)


def load_h36m(root: Path, keypoints: KeypointSet | None = None, *, where: str | None = None, check_files: bool = True) -> Dataset3D:
    """Human3.6M as mmpose lays out its samples: `root/h36m_coco.json`, `root/cameras.pkl` and
    the images under `root/<subject>/<subject>_<action>.<camera>/`; joints in h36m17's order."""
    root = Path(root)
    h36m = get_keypoint_set("h36m17")
    annotations = root / "h36m_coco.json"
    if not annotations.is_file():
        raise InputError(f"Human3.6M annotations not found: {annotations}", where=where)
    cameras = read_cameras(root / "cameras.pkl", where=where)
    return load_coco3d(annotations, root, keypoints or h36m, cameras=cameras, file_keypoints=h36m, where=where,
                       check_files=check_files, layout="h36m")


def load_h36m_npz(path: Path, root: Path, keypoints: KeypointSet | None = None, *, where: str | None = None) -> Dataset3D:
    """mmpose's Human3.6M body3d arrays (`imgname`, `part` 2-D, `S` camera-space metres, `center`,
    `scale` x 200 px boxes), with the camera table beside them."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise InputError(f"Human3.6M arrays not found: {path}", where=where)
    h36m = get_keypoint_set("h36m17")
    kps_set = keypoints or h36m
    cameras = read_cameras(root / "cameras.pkl", where=where)
    try:
        with np.load(path, allow_pickle=False) as z:
            names, part, s3 = z["imgname"], z["part"], z["S"]
            center, scale = z["center"], z["scale"]
    except KeyError as err:
        raise InputError(f"{path.name} lacks the array {err}", where=where) from None
    except (ValueError, OSError) as err:
        raise InputError(f"{path.name} is not a numpy archive of plain arrays ({err})", where=where) from None
    if part.shape[1:] != (len(h36m), 3) or s3.shape[1:] != (len(h36m), 4):
        raise InputError(f"{path.name}: expected part [N, 17, 3] and S [N, 17, 4], got {list(part.shape)} and {list(s3.shape)}", where=where)
    order = joint_correspondence(h36m, kps_set)
    frames = []
    for i, name in enumerate(names):
        parsed = parse_h36m_name(str(name))
        if parsed is None or (parsed["subject"], parsed["camera"]) not in cameras:
            raise InputError(f"{path.name}: no camera for {name}", where=where)
        cam = cameras[(parsed["subject"], parsed["camera"])]
        cam = Camera(cam.fx, cam.fy, cam.cx, cam.cy, cam.radial, cam.tangential)
        joints = s3[i, :, :3] * 1000.0
        joints[s3[i, :, 3] <= 0] = np.nan
        side = float(scale[i]) * 200.0
        box = (float(center[i][0]) - side / 2, float(center[i][1]) - side / 2, side, side)
        image = root / str(name)
        frames.append(Frame3D(image, 0, 0, _reorder(part[i], order, 0.0).astype(np.float32), _reorder(joints, order, np.nan),
                              cam, box, parsed["subject"], parsed["action"]))
    return Dataset3D(frames, kps_set, path, "h36m_npz", ["S read in metres, converted to mm; image sizes not in the file (0)"])


def _bbox_of(kps: np.ndarray) -> list[float]:
    lab = kps[kps[:, 2] > 0]
    if not len(lab):
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = lab[:, 0].min(), lab[:, 1].min()
    return [float(x0), float(y0), float(lab[:, 0].max() - x0), float(lab[:, 1].max() - y0)]
