"""tf.data input pipeline for 3-D person crops (family volumetric): crops, augmentation, (x, y, z) targets.

Each person is warped once from its source image to the model input by one affine map:
the `Preprocessing` geometry of the person's crop box (data/split3d.py), followed by the
same augmentation as the 2-D pipeline (data/pipeline.py: scale, in-plane rotation,
horizontal flip, shift about the input centre). A flip mirrors x and swaps the left and
right joints by the keypoint set's flip permutation; depth is left as it is (a mirrored
person stands at the same distance), and so is it under rotation, as MobileHumanPose
augments its crops.

Targets are per joint (x, y, z, visible) in the units the soft-argmax returns and the
decode reads (evaluate/volumetric.py `encode`): x, y in output cells by the layout's cell
origin, z in depth bins of the root-relative depth (`mm_to_bins`). A joint is visible
when it has 3-D and 2-D labels and its target lies inside the volume, where a soft-argmax
can reach it; the loss ignores the others.

Sample order and augmentation are pure functions of (seed, position in the stream), so a
run resumed at batch N sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np

from mdeploy.data.pipeline import Augment, sample_order
from mdeploy.keypoints import KeypointSet
from mdeploy.spec import Preprocessing


def layout_from_head(head: dict, input_size: tuple[int, int], stride: int):
    """The `VolumeLayout` of a model being trained: its grid is the input / stride."""
    from mdeploy.evaluate.volumetric import VolumeLayout

    data = head["layout"]
    return VolumeLayout(int(head["joints"]), int(data["depth"]), input_size[0] // stride, input_size[1] // stride,
                        data["order"], float(data["depth_range_mm"]), data["cell_origin"])


def crop_affines(ds, pre: Preprocessing) -> np.ndarray:
    """[N, 4] (scale_x, scale_y, offset_x, offset_y): each person's crop box -> the model input."""
    out = np.zeros((len(ds), 4), np.float32)
    for i, frame in enumerate(ds.frames):
        a = pre.geometry(frame.width, frame.height, frame.crop_box())
        out[i] = (a.scale_x, a.scale_y, a.offset_x, a.offset_y)
    return out


def root_relative_depths(ds, root: int) -> tuple[np.ndarray, np.ndarray]:
    """([N, J] depth of each joint minus its root's, mm, 0 where unknown; [N, J] whether it is known)."""
    joints = np.stack([f.joints for f in ds.frames]).astype(np.float64)  # [N, J, 3] camera space
    rel = joints[:, :, 2] - joints[:, root : root + 1, 2]
    known = np.isfinite(joints).all(axis=2) & np.isfinite(joints[:, root : root + 1, 2])
    return np.where(known, rel, 0.0).astype(np.float32), known


def build_volume_dataset(
    ds,
    pre: Preprocessing,
    keypoints: KeypointSet,
    layout,
    *,
    batch_size: int,
    seed: int = 0,
    epochs: int = 1,
    augment: Augment | None = None,
    shuffle: bool = True,
    start_batch: int = 0,
    drop_remainder: bool = True,
):
    """Batches of (input [B, H, W, 3] float32, targets [B, J, 4]: x, y cells, z bins, visible 0/1).

    `ds` is a 3-D split (data/split3d.py `Split3D`: samples with crop boxes, frames with
    camera-space joints); `layout` the `VolumeLayout` the targets are written for.
    """
    import tensorflow as tf

    from mdeploy.data.pipeline import _augment_matrix, decode, normalize, transform_points, warp

    n = len(ds)
    root = keypoints.root_index
    if root is None:
        from mdeploy.errors import InputError

        raise InputError(f"keypoint set {keypoints.name} has no root joint; 3-D targets are relative to one")
    order = sample_order(n, seed, epochs, shuffle)
    positions = np.arange(len(order), dtype=np.int64)
    start = start_batch * batch_size
    paths = tf.constant([str(s.image) for s in ds.samples])
    points2d = np.stack([s.keypoints for s in ds.samples]).astype(np.float32)  # [N, J, 3] x, y, v (source pixels)
    depth, known = root_relative_depths(ds, root)
    points2d[:, :, 2] = np.where(known & (points2d[:, :, 2] > 0), 1.0, 0.0)
    kps = tf.constant(points2d)
    bins = tf.constant(layout.mm_to_bins(depth).astype(np.float32))  # [N, J] depth bins
    bases = tf.constant(crop_affines(ds, pre))
    perm = tf.constant(np.asarray(keypoints.flip_permutation(), np.int32))
    height, width = pre.height, pre.width
    cell_x, cell_y = layout.width / width, layout.height / height
    half = 0.5 if layout.cell_origin == "centre" else 0.0
    limits = tf.constant([layout.width - 1, layout.height - 1, layout.depth - 1], tf.float32)

    def load(index, position):
        from mdeploy.data.pipeline import _base_matrix

        image = decode(tf.io.read_file(tf.gather(paths, index)))
        matrix = _base_matrix(tf.gather(bases, index))
        points = tf.gather(kps, index)
        z = tf.gather(bins, index)
        if augment is not None:
            aug, flipped = _augment_matrix(augment, seed, position, height, width)
            matrix = tf.linalg.matmul(aug, matrix)
            points = tf.cond(flipped, lambda: tf.gather(points, perm), lambda: points)
            z = tf.cond(flipped, lambda: tf.gather(z, perm), lambda: z)
        warped = warp(image, matrix, height, width)
        in_points = transform_points(points, matrix, height, width)  # input pixels; v = 0 outside the input
        xyz = tf.stack([in_points[:, 0] * cell_x - half, in_points[:, 1] * cell_y - half, z], axis=1)
        inside = tf.reduce_all((xyz >= 0.0) & (xyz <= limits), axis=1)
        visible = tf.cast(inside & (in_points[:, 2] > 0), tf.float32)
        targets = tf.concat([xyz * visible[:, None], visible[:, None]], axis=1)
        return normalize(warped, pre), targets

    d = tf.data.Dataset.from_tensor_slices((order[start:].astype(np.int64), positions[start:]))
    d = d.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.batch(batch_size, drop_remainder=drop_remainder)
    return d.prefetch(tf.data.AUTOTUNE)
