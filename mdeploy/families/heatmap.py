"""Single-person heatmaps (the MobileNetV2 CPM and Hourglass of PoseEstimationForMobile).

One output, `heatmaps` [1, H/stride, W/stride, K]: one channel per keypoint of the recipe's
set, read by argmax (evaluate/decode.py); parity compares the tensors and each drawn
keypoint's argmax cell (verify/parity.py); accuracy is PCKh/PCK (evaluate/evaluator.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mdeploy.errors import ModelError
from mdeploy.families import Family, Outputs
from mdeploy.keypoints import get_keypoint_set
from mdeploy.spec import OUTPUT_NAME


class HeatmapFamily(Family):
    name = "heatmap"
    description = "single person: one heatmap per keypoint"
    person_crops = True

    def output_names(self, head: dict) -> tuple[str, ...]:
        return (OUTPUT_NAME,)

    def canonical(self, raw, head: dict, where: str | None = None) -> dict:
        if isinstance(raw, (list, tuple)):
            raw = raw[-1]  # a training model's stages: the final heatmaps
        if isinstance(raw, dict):
            raw = raw[OUTPUT_NAME] if OUTPUT_NAME in raw else list(raw.values())[-1]
        return {OUTPUT_NAME: raw}

    def planned_channels(self, recipe, keypoints: int) -> dict[str, int]:
        return {OUTPUT_NAME: keypoints}

    def check_outputs(self, recipe, size: tuple[int, int], shapes: dict[str, tuple[int, ...]], where: Callable) -> int:
        kps = get_keypoint_set(recipe.model.keypoints)
        out_shape = shapes[OUTPUT_NAME]
        if len(out_shape) != 4 or out_shape[0] != 1:
            raise ModelError(
                f"the model output has shape {list(out_shape)}; mdeploy expects NHWC heatmaps [1, height, width, keypoints]",
                where=where("model", "import", "outputs"),
            )
        _, oh, ow, channels = out_shape
        if channels != len(kps):
            layout = " (it looks like NCHW: channels first)" if out_shape[1] == len(kps) else ""
            raise ModelError(
                f"the model outputs {channels} heatmap channels but keypoint set {kps.name} has {len(kps)}{layout}",
                where=where("model", "keypoints"),
            )
        return stride_of(size, (oh, ow), where)

    # ---- verification
    def parity(self, reference: Outputs, candidate: Outputs, names: list[str], spec) -> dict:
        from mdeploy.verify.parity import measure

        return measure(reference[OUTPUT_NAME], candidate[OUTPUT_NAME], names, spec)

    def parity_checks(self, metrics: dict, max_abs: float, min_agreement: float) -> list:
        from mdeploy.verify.parity import evaluate

        return evaluate(metrics, max_abs, min_agreement)

    def log_parity(self, metrics: dict) -> str:
        agree = "n/a" if metrics["agreement"] is None else f"{metrics['agreement']:.3f}"
        return f"max_abs {metrics['max_abs']:.3g}, agreement {agree} over {metrics['drawn']} drawn keypoints"

    def find_people(self, outputs: Outputs, names: list[str], spec) -> dict:
        from mdeploy.verify.people import measure_people

        return measure_people(outputs[OUTPUT_NAME], names, spec.decode.threshold)

    def people_check(self, metrics: dict) -> dict:
        from mdeploy.verify.people import people_check

        return people_check(metrics)

    def log_people(self, metrics: dict) -> str:
        return ", ".join(f"{p['name']}: {p['found']} of {metrics['keypoints']} keypoints found" for p in metrics["photos"])

    def glue_estimator(self, spec):
        """One person per frame, the argmax of each heatmap: `HeatmapDecoder` of the common glue."""
        from mdeploy.families import GlueEstimator

        return GlueEstimator(outputs=(spec.output.name,), decoder="HeatmapDecoder")

    # ---- training
    def train_dataset(self, ds, pre, keypoints, stride: int, head: dict, **options):
        from mdeploy.data.pipeline import build_dataset

        return build_dataset(ds, pre, keypoints, stride, **options)

    def train_loss(self, outputs: list, targets, settings):
        """Multi-stage L2 against the heatmaps, every stage supervised; `train.foreground_weight`
        counts heatmap pixels w times."""
        import tensorflow as tf

        weight = 1.0 + (settings.foreground_weight - 1.0) * targets
        return tf.add_n([0.5 * tf.reduce_sum(weight * tf.square(o - targets), axis=[1, 2, 3]) for o in outputs])

    def validate(self, model, pre, keypoints, stride: int, head: dict, val_ds) -> dict:
        from mdeploy.train.loop import validate

        return validate(model, pre, keypoints, stride, val_ds)

    # ---- accuracy, drawing
    def evaluate(self, runner, spec, ds, **options):
        from mdeploy.evaluate.evaluator import evaluate

        return evaluate(runner, spec, ds, **options)

    def detect(self, outputs: Outputs, spec, affine) -> list[np.ndarray]:
        from mdeploy.evaluate.decode import decode_spec, to_source

        return [to_source(decode_spec(outputs[OUTPUT_NAME], spec.output_stride, spec.decode)[0], affine)]


def stride_of(size: tuple[int, int], grid: tuple[int, int], where: Callable) -> int:
    """The one integer stride from the input size to an output grid (else a ModelError)."""
    height, width = size
    oh, ow = grid
    if not oh or not ow or height % oh or width % ow or height // oh != width // ow:
        raise ModelError(
            f"the output grid {oh}x{ow} is not the input {height}x{width} divided by one integer stride",
            where=where("model", "import", "outputs"),
        )
    return height // oh
