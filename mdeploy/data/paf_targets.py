"""Training targets of the multi-person PAF models: heatmaps, part affinity fields, ignore masks.

`encode` turns the people of one model input (COCO-18 keypoints in input pixels, visibility
v: 0 unlabelled, 1 labelled but hidden, 2 visible; any number of people) into what the
OpenPose-MobileNet stages are supervised with, on the output grid (stride 8), channel for
channel as a `PafLayout` says (tf-openpose's release layout by default):

- heatmaps [H/8, W/8, parts + 1]: per part a Gaussian around each labelled joint (sigma
  `sigma` cells; values below 0.01 cut to 0), the maximum over people, as tf-openpose
  trains; the background channel is 1 - the maximum over the parts.
- PAFs [H/8, W/8, 2 x limbs]: per limb whose two joints are labelled, the unit vector from
  its first joint to its second on every cell within `paf_width` cells of the segment
  (and at most `paf_width` beyond either end); where several people's limbs overlap, the
  mean of their vectors; 0 elsewhere. Limb k goes to channels `layout.paf_channels[k]`.
- mask [H/8, W/8, 1]: the weight the loss multiplies every channel of a cell by: 1, less
  the fraction of the cell covered by ignore regions (COCO crowd regions, and people who
  are outlined but have no labelled keypoint), so the model is not taught that unlabelled
  people are background.

Cells are area cells: cell (i, j) covers input pixels [8j, 8j + 8) x [8i, 8i + 8) and its
centre is at (8j + 4, 8i + 4) in continuous pixel coordinates (pixel index p spans
[p, p + 1)), the convention of the single-person heatmap pipeline (data/pipeline.py).

COCO files have 17 keypoints and no neck; `coco17_to_coco18` maps them by name and makes
the neck the mean of the two shoulders when both are labelled (`COCO18_FROM_COCO17`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import TF_OPENPOSE_COCO18, KeypointSet, PafLayout, get_keypoint_set

HEATMAP_CUT = 4.6052  # exponent beyond which a Gaussian value (< 0.01) is set to 0, as tf-openpose


@dataclass(frozen=True)
class TargetSettings:
    stride: int = 8
    sigma: float = 1.0  # heatmap Gaussian sigma, output cells (tf-openpose: 8 input pixels at stride 8)
    paf_width: float = 1.0  # half-width of a limb's PAF, output cells (tf-openpose: 8 input pixels)

    def __post_init__(self):
        if self.stride < 1 or self.sigma <= 0 or self.paf_width <= 0:
            raise ValueError(f"PAF target settings out of range: {self}")


@dataclass(frozen=True)
class PafTargets:
    heatmaps: np.ndarray  # [H/s, W/s, parts (+ background)] float32
    pafs: np.ndarray  # [H/s, W/s, 2 x limbs] float32
    mask: np.ndarray  # [H/s, W/s, 1] float32, the loss weight of each cell


# ---------------------------------------------------------------------------- COCO-17 -> COCO-18

# For each COCO-18 part, the COCO-17 joints it is made of: one joint is copied, two are
# averaged (the neck: the mean of the shoulders, labelled only when both are).
COCO18_FROM_COCO17: tuple[tuple[str, ...], ...] = tuple(
    ("left_shoulder", "right_shoulder") if name == "neck" else (name,) for name in get_keypoint_set("coco18").names
)


def map_mean_of(points: np.ndarray, source: KeypointSet, target: KeypointSet, table: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """[..., len(source), 3] -> [..., len(target), 3] by a table of source joint names per target joint.

    A target joint made of several source joints is their mean, labelled only when all of
    them are, with the lowest of their visibilities (hidden when any is hidden).
    """
    points = np.asarray(points, np.float32)
    if points.shape[-2:] != (len(source), 3):
        raise InputError(f"keypoints of shape {list(points.shape)} are not [..., {len(source)}, 3] ({source.name})")
    if len(table) != len(target):
        raise ValueError(f"mapping table has {len(table)} rows, keypoint set {target.name} has {len(target)} joints")
    out = np.zeros(points.shape[:-2] + (len(target), 3), np.float32)
    for k, names in enumerate(table):
        idx = [source.names.index(n) for n in names]
        parts = points[..., idx, :]  # [..., n, 3]
        labelled = np.all(parts[..., 2] > 0, axis=-1)
        out[..., k, :2] = np.where(labelled[..., None], parts[..., :2].mean(axis=-2), 0.0)
        out[..., k, 2] = np.where(labelled, parts[..., 2].min(axis=-1), 0.0)
    return out


def coco17_to_coco18(points: np.ndarray) -> np.ndarray:
    """COCO-17 keypoints [..., 17, 3] (x, y, v) -> COCO-18 [..., 18, 3] with the neck added."""
    return map_mean_of(points, get_keypoint_set("coco17"), get_keypoint_set("coco18"), COCO18_FROM_COCO17)


def coco_people(annotations: list[dict], names: tuple[str, ...] | None = None, *, source: str = "COCO annotations") -> np.ndarray:
    """One image's COCO annotations -> its people as COCO-18 [P, 18, 3] (x, y, v in image pixels).

    `names` are the file's keypoint names (its category's `keypoints`; COCO-17's order when
    None), mapped by name. Crowd annotations and people without a labelled keypoint are left
    out: they are regions to ignore (`ignore_mask`), not people to teach. A joint written as
    (0, 0, v) is unlabelled, as COCO writes them.
    """
    from mdeploy.keypoints import map_names

    coco17 = get_keypoint_set("coco17")
    mapping = map_names(names or coco17.names, coco17, source=source)
    people = []
    for ann in annotations:
        if ann.get("iscrowd"):
            continue
        raw = np.asarray(ann.get("keypoints") or [], np.float32)
        if raw.size != 3 * len(mapping.file_names):
            raise InputError(f"{source}: annotation {ann.get('id')} has {raw.size // 3} keypoints, expected {len(mapping.file_names)}")
        raw = raw.reshape(-1, 3)
        raw[(raw[:, 0] <= 0) & (raw[:, 1] <= 0), 2] = 0
        kps = np.zeros((len(coco17), 3), np.float32)
        for k, j in enumerate(mapping.source):
            if j is not None:
                kps[k] = raw[j]
        if (kps[:, 2] > 0).any():
            people.append(kps)
    return coco17_to_coco18(np.stack(people)) if people else np.zeros((0, TF_OPENPOSE_COCO18.parts, 3), np.float32)


# ---------------------------------------------------------------------------- encoding


def grid_size(input_size: tuple[int, int], stride: int) -> tuple[int, int]:
    height, width = (int(v) for v in input_size)
    if height % stride or width % stride:
        raise InputError(f"input size {height}x{width} is not a multiple of the output stride {stride}")
    return height // stride, width // stride


def encode(
    people: np.ndarray,
    input_size: tuple[int, int],
    layout: PafLayout = TF_OPENPOSE_COCO18,
    settings: TargetSettings = TargetSettings(),
    ignore: np.ndarray | None = None,
) -> PafTargets:
    """People [P, parts, 3] (x, y, v in input pixels) -> heatmaps, PAFs and the loss mask.

    `ignore` is an optional [H, W] map at input resolution (bool, or 0..1), 1 where the loss
    must not look (crowd regions, see `ignore_mask`); it becomes the mask's uncovered fraction.
    An image with nobody gives all-background heatmaps and zero PAFs.
    """
    people = np.asarray(people, np.float32)
    if people.size == 0:
        people = np.zeros((0, layout.parts, 3), np.float32)
    if people.ndim != 3 or people.shape[1:] != (layout.parts, 3):
        raise InputError(f"people of shape {list(people.shape)} are not [P, {layout.parts}, 3] ({layout.keypoints})")
    stride = settings.stride
    rows, cols = grid_size(input_size, stride)
    # cell coordinates: cell i's centre is 0 + i; a pixel coordinate p is p / stride - 0.5 cells
    cells = people.copy()
    cells[..., :2] = people[..., :2] / stride - 0.5
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)

    heat = np.zeros((rows, cols, layout.heatmaps), np.float32)
    labelled = cells[..., 2] > 0  # [P, K]
    for k in range(layout.parts):
        for p in np.nonzero(labelled[:, k])[0]:
            x, y = cells[p, k, :2]
            exponent = ((xs - x) ** 2 + (ys - y) ** 2) / (2.0 * settings.sigma**2)
            gauss = np.where(exponent > HEATMAP_CUT, 0.0, np.exp(-exponent))
            np.maximum(heat[:, :, k], gauss, out=heat[:, :, k])
    if layout.background is not None:
        heat[:, :, layout.background] = np.clip(1.0 - heat[:, :, : layout.parts].max(axis=2), 0.0, 1.0)

    pafs = np.zeros((rows, cols, layout.pafs), np.float32)
    for (a, b), (cx, cy) in zip(layout.limbs, layout.paf_channels):
        total = np.zeros((rows, cols, 2), np.float32)
        count = np.zeros((rows, cols), np.float32)
        for p in np.nonzero(labelled[:, a] & labelled[:, b])[0]:
            start, end = cells[p, a, :2], cells[p, b, :2]
            length = float(np.hypot(*(end - start)))
            if length < 1e-6:
                continue  # both joints in one place: no direction to learn
            ux, uy = (end - start) / length
            along = (xs - start[0]) * ux + (ys - start[1]) * uy
            across = np.abs((xs - start[0]) * uy - (ys - start[1]) * ux)
            on = (across <= settings.paf_width) & (along >= -settings.paf_width) & (along <= length + settings.paf_width)
            total[on] += (ux, uy)
            count[on] += 1
        hit = count > 0
        pafs[:, :, cx][hit] = total[:, :, 0][hit] / count[hit]
        pafs[:, :, cy][hit] = total[:, :, 1][hit] / count[hit]

    mask = np.ones((rows, cols, 1), np.float32)
    if ignore is not None:
        ignore = np.asarray(ignore, np.float32)
        if ignore.shape != (rows * stride, cols * stride):
            raise InputError(f"ignore mask of shape {list(ignore.shape)} is not the input size {[rows * stride, cols * stride]}")
        covered = ignore.reshape(rows, stride, cols, stride).mean(axis=(1, 3))
        mask[:, :, 0] = np.clip(1.0 - covered, 0.0, 1.0)
    return PafTargets(heat, pafs, mask)


# ---------------------------------------------------------------------------- COCO ignore regions


def ignore_mask(annotations: list[dict], height: int, width: int, *, unlabelled_people: bool = True) -> np.ndarray:
    """[height, width] bool, True inside the regions the loss must ignore, from one image's COCO annotations.

    Crowd annotations (`iscrowd: 1`, usually run-length encoded) always count; with
    `unlabelled_people`, so do people outlined (polygon or RLE) without a labelled keypoint.
    Annotations without a segmentation add nothing.
    """
    out = np.zeros((int(height), int(width)), bool)
    for ann in annotations:
        crowd = bool(ann.get("iscrowd"))
        keypoints = np.asarray(ann.get("keypoints") or [], np.float32).reshape(-1, 3)
        if not crowd and not (unlabelled_people and not (keypoints[:, 2] > 0).any()):
            continue
        segmentation = ann.get("segmentation")
        if segmentation:
            out |= segmentation_mask(segmentation, height, width)
    return out


def segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed RLE or compressed RLE) -> [height, width] bool."""
    height, width = int(height), int(width)
    if isinstance(segmentation, dict):
        size = segmentation.get("size") or [height, width]
        counts = segmentation.get("counts")
        if isinstance(counts, str | bytes):
            counts = rle_counts(counts)
        if not isinstance(counts, list) or len(size) != 2:
            raise InputError("a COCO RLE segmentation needs 'size' [h, w] and 'counts'")
        mask = rle_decode(counts, int(size[0]), int(size[1]))
        if mask.shape != (height, width):
            raise InputError(f"an RLE segmentation of size {list(size)} on an image of {height}x{width}")
        return mask
    if isinstance(segmentation, list):
        from PIL import Image, ImageDraw

        image = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(image)
        for polygon in segmentation:
            try:
                points = np.asarray(polygon, np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InputError("a COCO polygon segmentation holds something other than numbers") from None
            if points.size >= 6:
                draw.polygon([(float(x), float(y)) for x, y in zip(points[0::2], points[1::2])], fill=1)
        return np.asarray(image, bool)
    raise InputError(f"unknown COCO segmentation of type {type(segmentation).__name__}")


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """COCO run lengths (alternating 0s and 1s, starting with 0s, column-major) -> [height, width] bool."""
    flat = np.zeros(height * width, bool)
    position, value = 0, False
    for run in counts:
        run = int(run)
        if run < 0 or position + run > flat.size:
            raise InputError(f"a COCO RLE segmentation runs past its {height}x{width} image")
        if value:
            flat[position:position + run] = True
        position += run
        value = not value
    return flat.reshape(width, height).T


def rle_counts(text: str | bytes) -> list[int]:
    """COCO's compressed RLE string -> run lengths.

    Each run is a signed number written 5 bits per character (character code - 48; bit 5
    says another character follows, bit 4 of the last is the sign); from the third run on,
    the number is the difference to the run two places before.
    """
    data = text.encode() if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    i = 0
    while i < len(data):
        value, shift, more = 0, 0, True
        while more:
            if i >= len(data):
                raise InputError("a COCO RLE string ends in the middle of a number")
            c = data[i] - 48
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            i += 1
            shift += 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
