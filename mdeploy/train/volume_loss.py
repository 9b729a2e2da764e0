"""The volumetric family's training loss and validation score (MobileHumanPose's way).

Loss: the model's raw volume goes through the soft-argmax inside the loss (softmax over
each joint's whole D*H*W volume, then the expected cell along x, y and depth), and the
coordinates are compared with the targets (data/pipeline3d.py) by L1, per visible joint,
as MobileHumanPose trains. A model that already ends in the soft-argmax (`coords`) is
compared as it is. Per image: the mean over joints of |dx| + |dy| + |dz| of the visible
ones (cells and bins), 0 for an image with none.

Validation: the model being trained is scored on (up to `limit` people of) the validation
split through the family's own evaluation path (the one the accuracy stage runs), so the
loop's numbers are the build's: MPJPE (primary, mm, lower is better), PA-MPJPE, 3DPCK.
"""

from __future__ import annotations

import numpy as np


def soft_argmax_tf(volume, joints: int, depth: int, order: str = "joint_major"):
    """[B, H, W, J*D] raw scores -> [B, J, 3] expected (x, y cells, z bins), cell i at coordinate i."""
    import tensorflow as tf

    h, w = volume.shape[1], volume.shape[2]
    if order == "joint_major":
        v = tf.reshape(volume, [-1, h, w, joints, depth])  # channel j*D + d
    else:
        v = tf.transpose(tf.reshape(volume, [-1, h, w, depth, joints]), [0, 1, 2, 4, 3])  # channel d*J + j
    v = tf.transpose(v, [0, 3, 1, 2, 4])  # [B, J, H, W, D]
    p = tf.reshape(tf.nn.softmax(tf.reshape(v, [-1, joints, h * w * depth]), axis=-1), [-1, joints, h, w, depth])
    ex = tf.reduce_sum(tf.reduce_sum(p, axis=[2, 4]) * tf.range(w, dtype=p.dtype), axis=-1)
    ey = tf.reduce_sum(tf.reduce_sum(p, axis=[3, 4]) * tf.range(h, dtype=p.dtype), axis=-1)
    ez = tf.reduce_sum(tf.reduce_sum(p, axis=[2, 3]) * tf.range(depth, dtype=p.dtype), axis=-1)
    return tf.stack([ex, ey, ez], axis=-1)


def coordinates(output, head: dict):
    """The model's final output as [B, J, 3] coordinates: soft-argmax of a volume, or the coords it gives."""
    if head.get("output") == "coords" or len(output.shape) == 3:
        return output
    return soft_argmax_tf(output, int(head["joints"]), int(head["layout"]["depth"]), head["layout"].get("order", "joint_major"))


def volume_loss(outputs: list, targets, head: dict):
    """Per-image L1 [B] of the final output's soft-argmax against targets [B, J, 4] (x, y, z, visible)."""
    import tensorflow as tf

    coords = coordinates(outputs[-1], head)
    visible = targets[:, :, 3]
    l1 = tf.reduce_sum(tf.abs(coords - targets[:, :, :3]), axis=-1) * visible  # [B, J]
    return tf.reduce_sum(l1, axis=1) / tf.maximum(tf.reduce_sum(visible, axis=1), 1.0)


def training_spec(pre, keypoints, stride: int, head: dict):
    """A `ModelSpec` of the model being trained, as the model stage would write it (family volumetric)."""
    from mdeploy.spec import ModelSpec, TensorInfo

    h, w = pre.size
    joints, depth = int(head["joints"]), int(head["layout"]["depth"])
    if head.get("output") == "coords":
        output = TensorInfo("coords", (1, joints, 3))
    else:
        output = TensorInfo("volume", (1, h // stride, w // stride, joints * depth))
    return ModelSpec(name="training", input=TensorInfo("image", (1, h, w, 3)), output=output, preprocessing=pre,
                     keypoints=keypoints, output_stride=stride, task="pose_volumetric", family="volumetric", head=head)


def validate_volume(model, pre, keypoints, stride: int, head: dict, val_ds, limit: int = 200) -> dict:
    """MPJPE (primary, mm: lower is better, which the loop reads from evaluate/metrics.LOWER_IS_BETTER),
    PA-MPJPE and 3DPCK of the model being trained, on up to `limit` people of the validation split."""
    from mdeploy.families import get_family

    spec = training_spec(pre, keypoints, stride, head)

    def run(batch):
        out = model(batch, training=False)
        return np.asarray(out[-1] if isinstance(out, (list, tuple)) else out)

    result = get_family("volumetric").evaluate(run, spec, val_ds, batch_size=32, limit=limit)
    return {f"val_{k}": v for k, v in result.metrics.items()} | {"primary": result.primary}
