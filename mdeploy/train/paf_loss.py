"""Loss and validation of the multi-person PAF models (OpenPose-MobileNet) for the training loop.

`paf_loss` is OpenPose's stage-wise L2 loss: every stage predicts PAFs and heatmaps and every
stage is compared with the same targets (intermediate supervision), each cell weighted by the
loss mask so that crowds and people outlined without keypoints teach nothing:

    loss(image) = sum over stages s of  0.5 * ||mask * (pafs_s - pafs_t)||^2
                                      + 0.5 * ||mask * (heatmaps_s - heatmaps_t)||^2

summed over cells and channels (tf-openpose's `tf.nn.l2_loss` per stage). It returns the loss
of each image ([B]); the loop averages over the global batch as it does for single-person
models. `validate_people` scores the model being trained by COCO keypoint AP (OKS) through the
PAF family's decoder, the path `mdeploy build` uses for a finished model.
"""

from __future__ import annotations

import numpy as np

from mdeploy.data.coco import Dataset
from mdeploy.evaluate.paf import PafSettings
from mdeploy.keypoints import PafLayout, get_keypoint_set
from mdeploy.spec import Preprocessing


def split_stages(outputs, stages: int | None = None) -> list[tuple]:
    """The training model's outputs -> [(pafs, heatmaps)] per stage, final stage last.

    The order is openpose_mobilenet.py's: `stage_0_pafs, stage_0_heatmaps, ..., stage_N_pafs,
    stage_N_heatmaps`. `stages` (when given) must match the number of pairs.
    """
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if len(outputs) % 2:
        raise ValueError(f"a PAF model gives (pafs, heatmaps) per stage; got {len(outputs)} outputs")
    pairs = [(outputs[i], outputs[i + 1]) for i in range(0, len(outputs), 2)]
    if stages is not None and int(stages) != len(pairs):
        raise ValueError(f"expected {stages} stages of (pafs, heatmaps), the model gives {len(pairs)}")
    return pairs


def paf_loss(outputs, targets, stages: int | None = None):
    """Per-image stage-wise L2 loss [B] of a PAF model's training outputs against (heatmaps, pafs, mask).

    `targets` is what `build_multi_dataset` yields next to the images: heatmaps [B, h, w, H],
    PAFs [B, h, w, 2L] and the mask [B, h, w, 1]. Shapes are checked stage by stage, so a model
    whose channels do not follow the layout fails here rather than broadcasting.
    """
    import tensorflow as tf

    heat_t, paf_t, mask = targets
    heat_t = tf.convert_to_tensor(heat_t, tf.float32)
    paf_t = tf.convert_to_tensor(paf_t, tf.float32)
    mask = tf.convert_to_tensor(mask, tf.float32)
    terms = []
    for s, (pafs, heatmaps) in enumerate(split_stages(outputs, stages)):
        for name, pred, want in (("PAFs", pafs, paf_t), ("heatmaps", heatmaps, heat_t)):
            if pred.shape[1:] != want.shape[1:]:
                raise ValueError(f"stage {s} {name} {list(pred.shape)} do not match the targets {list(want.shape)}")
            diff = mask * (tf.cast(pred, tf.float32) - want)
            terms.append(0.5 * tf.reduce_sum(tf.square(diff), axis=[1, 2, 3]))
    return tf.add_n(terms)


class KerasPafRunner:
    """A Keras training model as a runner of the PAF family: its final heatmaps and PAFs by name."""

    def __init__(self, model):
        self.model = model

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from mdeploy.families.paf import PAF_OUTPUT
        from mdeploy.spec import OUTPUT_NAME

        out = self.model(batch, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        if len(out) < 2:
            raise ValueError("a PAF model gives at least its final PAFs and heatmaps")
        return {OUTPUT_NAME: np.asarray(out[-1], np.float32), PAF_OUTPUT: np.asarray(out[-2], np.float32)}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from mdeploy.spec import OUTPUT_NAME

        return self.outputs(batch)[OUTPUT_NAME]


def training_spec(pre: Preprocessing, layout: PafLayout, settings: PafSettings):
    """The ModelSpec of a PAF model in training: what the family's decoder and AP need to know."""
    from mdeploy.families.paf import PAF_OUTPUT
    from mdeploy.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec, TensorInfo

    h, w = pre.size
    grid = (1, h // layout.stride, w // layout.stride)
    return ModelSpec(
        name="training",
        input=TensorInfo(INPUT_NAME, (1, h, w, 3)),
        output=TensorInfo(OUTPUT_NAME, (*grid, layout.heatmaps)),
        extra_outputs=(TensorInfo(PAF_OUTPUT, (*grid, layout.pafs)),),
        preprocessing=pre,
        keypoints=get_keypoint_set(layout.keypoints),
        output_stride=layout.stride,
        task="pose_paf",
        family="paf",
        head={"layout": layout.to_json(), "settings": settings.to_json()},
    )


def validate_people(
    model, pre: Preprocessing, layout: PafLayout, settings: PafSettings | None, val_ds: Dataset, limit: int | None = None
) -> dict:
    """COCO keypoint AP (OKS) of the model being trained on the validation split: `val_ap_oks` and the rest.

    Every image of `val_ds` is fed whole, its people decoded by the PAF family with `settings`
    (tf-openpose's constants when None) and scored against the split's COCO file. `limit`
    feeds only the first images, but AP is still computed against the whole file (people of
    the images left out count as missed): leave it None unless the split is large.
    """
    from mdeploy.evaluate.multi import evaluate_people
    from mdeploy.families import get_family

    settings = settings or PafSettings()
    spec = training_spec(pre, layout, settings)
    result = evaluate_people(get_family("paf"), KerasPafRunner(model), spec, val_ds, limit=limit)
    return {f"val_{k}": v for k, v in result.metrics.items()} | {"primary": result.primary}
