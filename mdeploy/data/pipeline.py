"""tf.data input pipeline: decode, augment, heatmap targets, normalize; deterministic from a seed.

Each sample is warped once from its source image to the model input by one affine map:
the ModelSpec geometry of its crop box (the whole image, or a box around the person),
followed by the augmentation (scale 0.8-1.2, rotation +-15 degrees, horizontal flip with
left/right joints swapped, random shift: the random crop). Keypoints go through the same
map. Targets are Gaussian heatmaps (sigma 6 px at a 192 px input, truncated where the
value drops below 0.2) drawn at input resolution and area-averaged to the output grid.
Pixels are then normalized with the ModelSpec contract, exactly as `Preprocessing.normalize`.

Sample order is a seeded permutation per epoch and augmentation uses stateless random
numbers keyed by (seed, position in the stream), so a run resumed at step N sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mdeploy.data.coco import Dataset
from mdeploy.keypoints import KeypointSet
from mdeploy.spec import Preprocessing

SIGMA_AT_192 = 6.0
TRUNCATE = 1.6052  # exponent beyond which a heatmap value (< 0.2) is set to zero


@dataclass(frozen=True)
class Augment:
    scale: tuple[float, float] = (0.8, 1.2)
    rotation: float = 15.0  # degrees, +-
    flip: bool = True
    shift: float = 0.1  # fraction of the input size, +-


NO_AUGMENT = None


def sigma_for(pre: Preprocessing) -> float:
    return SIGMA_AT_192 * pre.height / 192.0


def base_affines(ds: Dataset, pre: Preprocessing) -> np.ndarray:
    """[N, 4] (scale_x, scale_y, offset_x, offset_y) of each sample's crop box -> input."""
    out = np.zeros((len(ds), 4), np.float32)
    for i, s in enumerate(ds.samples):
        a = pre.geometry(s.width, s.height, s.crop_box(ds.crop))
        out[i] = (a.scale_x, a.scale_y, a.offset_x, a.offset_y)
    return out


def sample_order(n: int, seed: int, epochs: int, shuffle: bool) -> np.ndarray:
    """The index of the sample at every position of the stream, epoch after epoch."""
    if not shuffle:
        return np.tile(np.arange(n), epochs)
    return np.concatenate([np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)])


def build_dataset(
    ds: Dataset,
    pre: Preprocessing,
    keypoints: KeypointSet,
    stride: int,
    *,
    batch_size: int,
    seed: int = 0,
    epochs: int = 1,
    augment: Augment | None = None,
    shuffle: bool = True,
    start_batch: int = 0,
    drop_remainder: bool = True,
    with_keypoints: bool = False,
):
    """Batches of (input [B, H, W, 3] float32, heatmaps [B, H/stride, W/stride, K]).

    With `with_keypoints`, batches also carry the keypoints in input coordinates [B, K, 3].
    """
    import tensorflow as tf

    n = len(ds)
    order = sample_order(n, seed, epochs, shuffle)
    positions = np.arange(len(order), dtype=np.int64)
    start = start_batch * batch_size
    paths = tf.constant([str(s.image) for s in ds.samples])
    kps = tf.constant(np.stack([s.keypoints for s in ds.samples]).astype(np.float32))
    bases = tf.constant(base_affines(ds, pre))
    perm = tf.constant(np.asarray(keypoints.flip_permutation(), np.int32))
    height, width = pre.height, pre.width
    sigma = sigma_for(pre)

    def load(index, position):
        image = decode(tf.io.read_file(tf.gather(paths, index)))
        base = tf.gather(bases, index)
        matrix = _base_matrix(base)
        points = tf.gather(kps, index)
        if augment is not None:
            aug, flipped = _augment_matrix(augment, seed, position, height, width)
            matrix = tf.linalg.matmul(aug, matrix)
            points = tf.cond(flipped, lambda: tf.gather(points, perm), lambda: points)
        warped = warp(image, matrix, height, width)
        in_points = transform_points(points, matrix, height, width)
        targets = heatmaps(in_points, height, width, stride, sigma)
        x = normalize(warped, pre)
        if with_keypoints:
            return x, targets, in_points
        return x, targets

    d = tf.data.Dataset.from_tensor_slices((order[start:].astype(np.int64), positions[start:]))
    d = d.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.batch(batch_size, drop_remainder=drop_remainder)
    return d.prefetch(tf.data.AUTOTUNE)


def decode(raw):
    """Image bytes -> uint8 [H, W, 3], decoding JPEG exactly as PIL does (accurate IDCT).

    TensorFlow's default JPEG decoder uses a faster IDCT that differs from PIL (used by
    evaluation, parity and prediction) by up to 6 levels; training must see the same pixels.
    """
    import tensorflow as tf

    image = tf.cond(
        tf.io.is_jpeg(raw),
        lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(raw, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def _base_matrix(base):
    import tensorflow as tf

    sx, sy, ox, oy = base[0], base[1], base[2], base[3]
    zero, one = tf.zeros([]), tf.ones([])
    return tf.stack([tf.stack([sx, zero, ox]), tf.stack([zero, sy, oy]), tf.stack([zero, zero, one])])


def _augment_matrix(aug: Augment, seed: int, position, height: int, width: int):
    """Scale, rotate, flip about the input centre, then shift: a 3x3 map in input coordinates."""
    import tensorflow as tf

    key = tf.stack([tf.constant(seed, tf.int64), position])
    u = tf.random.stateless_uniform([5], seed=key, dtype=tf.float32)
    scale = aug.scale[0] + u[0] * (aug.scale[1] - aug.scale[0])
    theta = (u[1] * 2 - 1) * aug.rotation * math.pi / 180
    flipped = tf.logical_and(tf.constant(aug.flip), u[2] < 0.5)
    fx = tf.where(flipped, -1.0, 1.0)
    tx = (u[3] * 2 - 1) * aug.shift * width
    ty = (u[4] * 2 - 1) * aug.shift * height
    cx, cy = width / 2.0, height / 2.0
    c, s = tf.cos(theta) * scale, tf.sin(theta) * scale
    # p' = R S F (p - centre) + centre + shift
    a, b = c * fx, -s
    d, e = s * fx, c
    row0 = tf.stack([a, b, cx + tx - a * cx - b * cy])
    row1 = tf.stack([d, e, cy + ty - d * cx - e * cy])
    return tf.stack([row0, row1, tf.constant([0.0, 0.0, 1.0])]), flipped


def warp(image, matrix, height: int, width: int):
    """Resample `image` (uint8 HxWx3) so that input = matrix @ source (continuous coordinates)."""
    import tensorflow as tf

    inv = tf.linalg.inv(matrix)
    # Pixel centres: index i sits at i + 0.5. Map output index -> source index.
    shift_in = tf.constant([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    shift_out = tf.constant([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    t = tf.linalg.matmul(shift_out, tf.linalg.matmul(inv, shift_in))
    flat = tf.reshape(t, [9])[:8] / t[2, 2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=flat[None],
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    # Resized frames are 8-bit images on every other path; PIL's bilinear truncates to 8 bits,
    # so truncate too (the epsilon absorbs float32 noise such as 47.99999 for an exact 48).
    return tf.clip_by_value(tf.floor(out[0] + 1e-3), 0.0, 255.0)


def transform_points(points, matrix, height: int, width: int):
    """[K, 3] source keypoints -> input coordinates; joints that leave the input become v = 0."""
    import tensorflow as tf

    xy1 = tf.concat([points[:, :2], tf.ones_like(points[:, :1])], axis=1)
    mapped = tf.linalg.matmul(xy1, matrix, transpose_b=True)[:, :2]
    inside = (mapped[:, 0] >= 0) & (mapped[:, 0] < width) & (mapped[:, 1] >= 0) & (mapped[:, 1] < height)
    v = tf.where(inside & (points[:, 2] > 0), points[:, 2], 0.0)
    return tf.concat([mapped, v[:, None]], axis=1)


def heatmaps(points, height: int, width: int, stride: int, sigma: float):
    """Gaussian targets [H/stride, W/stride, K]: drawn at input resolution, area-averaged."""
    import tensorflow as tf

    xs = tf.range(width, dtype=tf.float32) + 0.5
    ys = tf.range(height, dtype=tf.float32) + 0.5
    dx2 = tf.square(xs[None, :] - points[:, 0:1])  # [K, W]
    dy2 = tf.square(ys[None, :] - points[:, 1:2])  # [K, H]
    exponent = (dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma * sigma)  # [K, H, W]
    maps = tf.where(exponent > TRUNCATE, 0.0, tf.exp(-exponent))
    maps = maps * tf.cast(points[:, 2] > 0, tf.float32)[:, None, None]
    maps = tf.transpose(maps, [1, 2, 0])[None]
    if stride > 1:
        maps = tf.nn.avg_pool2d(maps, stride, stride, "VALID")
    return maps[0]


def normalize(pixels, pre: Preprocessing):
    """TensorFlow twin of `Preprocessing.normalize` (pixels 0..255 RGB -> model input)."""
    import tensorflow as tf

    x = tf.cast(pixels, tf.float32)
    if pre.channels == "bgr":
        x = x[..., ::-1]
    lo, hi = pre.range
    x = lo + x * ((hi - lo) / 255.0)
    if any(m != 0 for m in pre.mean) or any(s != 1 for s in pre.std):
        x = (x - tf.constant(pre.mean, tf.float32)) / tf.constant(pre.std, tf.float32)
    return x
