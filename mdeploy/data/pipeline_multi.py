"""tf.data input pipeline of the multi-person PAF models: whole images, every person, ignore regions.

The single-person pipeline (data/pipeline.py) feeds one crop per person; a PAF model sees the
whole image with everybody in it, so its unit is the image (`ImageRecord`: the image, its
people [P, K, 3] in source pixels in the model's keypoint order, and the regions the loss
must ignore). Each image is warped once, by the same single affine map as in pipeline.py:
the Preprocessing geometry of the whole image (stretch, letterbox or crop, as the spec
says) followed by the same augmentation family (scale, rotation, horizontal flip with the
keypoint set's left/right permutation applied to every person, shift). All people go
through that map; joints that leave the input become unlabelled. The ignore regions
(COCO crowd regions, people outlined without keypoints) are drawn at source resolution and
warped with the image, so a region covers the same input pixels as the people in it.

Targets come from `paf_targets.encode` on the warped people and ignore map: heatmaps
(parts + background), PAFs and the loss mask, at the layout's stride. Pixels are normalized
as `Preprocessing.normalize`. Batches are `(image [B, H, W, 3], (heatmaps [B, h, w, parts+1],
pafs [B, h, w, 2 x limbs], mask [B, h, w, 1]))`.

As in pipeline.py, the image order is a seeded permutation per epoch and augmentation draws
stateless random numbers keyed by (seed, position in the stream); the target encoding is a
pure function of its inputs. So the stream is a pure function of (seed, position), and a run
resumed at batch N sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.data.coco import Dataset, read_json
from mdeploy.data.paf_targets import TargetSettings, encode, grid_size, segmentation_mask
from mdeploy.data.pipeline import Augment, _augment_matrix, _base_matrix, decode, normalize, sample_order, transform_points, warp
from mdeploy.errors import InputError
from mdeploy.keypoints import TF_OPENPOSE_COCO18, KeypointSet, PafLayout, get_keypoint_set
from mdeploy.spec import Preprocessing

__all__ = ["Augment", "ImageRecord", "build_multi_dataset", "group_by_image"]


@dataclass(frozen=True)
class ImageRecord:
    """One training image of a multi-person model and everybody labelled in it."""

    path: Path
    width: int
    height: int
    people: np.ndarray  # [P, K, 3] x, y, v in source pixels (continuous coordinates), the model's keypoint order
    ignore: tuple = ()  # COCO segmentations (polygons or RLE) in source pixels the loss ignores

    def ignore_mask(self) -> np.ndarray:
        """[height, width] bool, True inside any ignore region."""
        out = np.zeros((int(self.height), int(self.width)), bool)
        for segmentation in self.ignore:
            out |= segmentation_mask(segmentation, self.height, self.width)
        return out


# ---------------------------------------------------------------------------- from a COCO Dataset


def _is_ignored(ann: dict) -> bool:
    """The regions `paf_targets.ignore_mask` ignores: crowds, and people outlined without a labelled keypoint."""
    if ann.get("iscrowd"):
        return True
    keypoints = np.asarray(ann.get("keypoints") or [], np.float32).reshape(-1, 3)
    return not (keypoints[:, 2] > 0).any()


def _add_neck(people: np.ndarray, keypoints: KeypointSet, ds: Dataset) -> np.ndarray:
    """A COCO-17 file read as COCO-18 has no neck: make it the mean of the shoulders, as tf-openpose trains.

    Only when the file lacks the neck (a file that labels it keeps its own) and both shoulders
    are labelled; the neck's visibility is the lower of the two (hidden when either is).
    """
    names = keypoints.names
    if "neck" not in names or "left_shoulder" not in names or "right_shoulder" not in names:
        return people
    neck = names.index("neck")
    if ds.mapping is not None and ds.mapping.source[neck] is not None:
        return people
    left, right = people[:, names.index("left_shoulder")], people[:, names.index("right_shoulder")]
    both = (left[:, 2] > 0) & (right[:, 2] > 0) & (people[:, neck, 2] <= 0)
    people = people.copy()
    people[both, neck, :2] = (left[both, :2] + right[both, :2]) / 2
    people[both, neck, 2] = np.minimum(left[both, 2], right[both, 2])
    return people


def group_by_image(ds: Dataset, *, ignore_regions: bool = True) -> list[ImageRecord]:
    """A COCO Dataset (one sample per person) -> one ImageRecord per image, in first-seen order.

    People keep the Dataset's keypoints (already in the model's keypoint order); a COCO-17 file
    read for a COCO-18 model gets the neck between the shoulders. With `ignore_regions`, the
    crowd regions and the outlined people without keypoints of each image are read from the
    COCO file itself (`ds.source`), as `paf_targets.ignore_mask` chooses them.
    """
    by_image: dict[Path, list] = {}
    for s in ds.samples:
        by_image.setdefault(Path(s.image), []).append(s)
    keypoints = ds.mapping.target if ds.mapping is not None else None
    regions: dict[Path, list] = {}
    if ignore_regions and ds.layout == "coco" and ds.source and Path(ds.source).is_file():
        regions = _ignore_regions(Path(ds.source), list(by_image))
    records = []
    for path, samples in by_image.items():
        people = np.stack([s.keypoints for s in samples]).astype(np.float32)
        if keypoints is not None:
            people = _add_neck(people, keypoints, ds)
        first = samples[0]
        records.append(ImageRecord(path, int(first.width), int(first.height), people, tuple(regions.get(path, ()))))
    return records


def _ignore_regions(source: Path, paths: list[Path]) -> dict[Path, list]:
    """Segmentations to ignore per image path, matching the file's `file_name`s to the paths' endings."""
    data = read_json(source, None)
    by_name = {str(img.get("file_name")): img.get("id") for img in data.get("images", []) if isinstance(img, dict)}
    ignored: dict = {}
    for ann in data.get("annotations", []):
        if isinstance(ann, dict) and ann.get("segmentation") and _is_ignored(ann):
            ignored.setdefault(ann.get("image_id"), []).append(ann["segmentation"])
    out: dict[Path, list] = {}
    if not ignored:
        return out
    for path in paths:
        parts = path.parts
        for n in range(1, len(parts) + 1):  # file_name may hold folders: try the path's endings, shortest first
            image_id = by_name.get(Path(*parts[-n:]).as_posix())
            if image_id is not None:
                if image_id in ignored:
                    out[path] = ignored[image_id]
                break
    return out


# ---------------------------------------------------------------------------- the dataset


def build_multi_dataset(
    images: list[ImageRecord],
    pre: Preprocessing,
    layout: PafLayout = TF_OPENPOSE_COCO18,
    *,
    batch_size: int,
    seed: int = 0,
    epochs: int = 1,
    augment: Augment | None = None,
    shuffle: bool = True,
    start_batch: int = 0,
    drop_remainder: bool = True,
    settings: TargetSettings | None = None,
):
    """Batches of (input [B, H, W, 3], (heatmaps [B, h, w, H], pafs [B, h, w, 2L], mask [B, h, w, 1])).

    `images` are ImageRecords (`group_by_image` makes them from a COCO Dataset); `settings`
    the target constants (default: tf-openpose's at the layout's stride).
    """
    import tensorflow as tf

    if not images:
        raise InputError("no training images: a multi-person dataset needs at least one image with people")
    keypoints = get_keypoint_set(layout.keypoints)
    settings = settings or TargetSettings(stride=layout.stride)
    height, width = pre.height, pre.width
    rows, cols = grid_size((height, width), settings.stride)
    parts = layout.parts
    people_list = []
    for r in images:
        p = np.asarray(r.people, np.float32)
        if p.size == 0:
            p = np.zeros((0, parts, 3), np.float32)
        if p.ndim != 3 or p.shape[1:] != (parts, 3):
            raise InputError(f"{r.path}: people of shape {list(p.shape)} are not [P, {parts}, 3] ({layout.keypoints})")
        people_list.append(p)

    n = len(images)
    order = sample_order(n, seed, epochs, shuffle)
    positions = np.arange(len(order), dtype=np.int64)
    start = start_batch * batch_size
    paths = tf.constant([str(r.path) for r in images])
    bases = np.zeros((n, 4), np.float32)
    for i, r in enumerate(images):
        a = pre.geometry(r.width, r.height)
        bases[i] = (a.scale_x, a.scale_y, a.offset_x, a.offset_y)
    bases = tf.constant(bases)
    # all people of all images in one tensor; image i's are rows offsets[i]:offsets[i + 1]
    offsets = tf.constant(np.concatenate([[0], np.cumsum([len(p) for p in people_list])]).astype(np.int64))
    all_people = tf.constant(np.concatenate(people_list) if people_list else np.zeros((0, parts, 3), np.float32))
    perm = tf.constant(np.asarray(keypoints.flip_permutation(), np.int32))

    def rasterize(index):
        record = images[int(index)]
        if not record.ignore:
            return np.zeros((1, 1, 1), np.uint8)  # warps to zeros everywhere: nothing to ignore
        return (record.ignore_mask()[:, :, None] * np.uint8(255)).astype(np.uint8)

    def targets(people, ignore):
        t = encode(people, (height, width), layout, settings, ignore=ignore)
        return t.heatmaps, t.pafs, t.mask

    def load(index, position):
        image = decode(tf.io.read_file(tf.gather(paths, index)))
        matrix = _base_matrix(tf.gather(bases, index))
        people = all_people[offsets[index]:offsets[index + 1]]
        if augment is not None:
            aug, flipped = _augment_matrix(augment, seed, position, height, width)
            matrix = tf.linalg.matmul(aug, matrix)
            people = tf.cond(flipped, lambda: tf.gather(people, perm, axis=1), lambda: people)
        warped = warp(image, matrix, height, width)
        in_people = tf.reshape(transform_points(tf.reshape(people, [-1, 3]), matrix, height, width), [-1, parts, 3])
        source_ignore = tf.numpy_function(rasterize, [index], tf.uint8, stateful=False)
        source_ignore.set_shape([None, None, 1])
        ignore = warp(source_ignore, matrix, height, width)[:, :, 0] / 255.0
        heat, pafs, mask = tf.numpy_function(targets, [in_people, ignore], [tf.float32] * 3, stateful=False)
        heat.set_shape([rows, cols, layout.heatmaps])
        pafs.set_shape([rows, cols, layout.pafs])
        mask.set_shape([rows, cols, 1])
        return normalize(warped, pre), (heat, pafs, mask)

    d = tf.data.Dataset.from_tensor_slices((order[start:].astype(np.int64), positions[start:]))
    d = d.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.batch(batch_size, drop_remainder=drop_remainder)
    return d.prefetch(tf.data.AUTOTUNE)
