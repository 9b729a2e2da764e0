"""Model families: the one place per kind of output that knows what the outputs mean.

A single-person heatmap model (CPM, Hourglass), a multi-person heatmap + PAF model
(OpenPose-MobileNet) and a 3D volumetric model are built, converted, pushed and timed the
same way; they differ in what their output tensors mean. A `Family` holds that meaning for
every layer that needs it, registered under one name:

- the spec section: which canonical outputs the model has (`output_names`), how a raw
  model's output becomes them (`canonical`), how their shapes are checked against the
  recipe (`check_outputs`), and the family's own settings written to spec.json (`head`);
- parity: how an artifact's outputs are compared with the canonical model's (`parity`,
  `parity_checks`: tensors, then what an app would draw);
- finding people: what the canonical model finds on photos (`find_people`, `people_check`);
- accuracy: how a split is scored (`evaluate`);
- training: the examples, batches and targets, the loss and the validation score
  (`train_examples`, `train_dataset`, `train_loss`, `validate`);
- drawing: the people `mdeploy predict` and the report overlay draw (`detect`,
  `draw_threshold`), what `predict --json` adds per joint (`joint_extras`) and, for a
  family with depth, the root-relative 3-D skeleton the report plots (`skeleton3d`);
- glue: the Kotlin/Swift decoder sources the family adds to the app glue (`glue_files`), and
  how the common `PoseEstimator` reads the outputs and turns them into people (`glue_estimator`).

Stages, verification, the report and codegen ask `family_of(spec)` and never branch on
the family themselves. Families are imported lazily: nothing heavy loads at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mdeploy.registry import Registry

Outputs = dict[str, np.ndarray]  # output name -> [N, ...] float32, the canonical names


@dataclass(frozen=True)
class GlueEstimator:
    """How the app's common `PoseEstimator` turns a family's outputs into people.

    The estimator runs the model, reads `outputs` (signature names, in the order the decoder
    takes them; each dequantized with its own scale) and hands them to `decoder`, a Kotlin
    object / Swift type of the glue that implements `PeopleDecoder` (outputs + the frame's
    preprocessing geometry -> every person in frame pixels). `templates` are further
    templates of `templates/glue/<platform>/` (names without the suffix) rendered with the
    common glue's values, where that decoder lives when the common glue does not define it.
    Templates read these values; none of them names a family.
    """

    outputs: tuple[str, ...]
    decoder: str
    templates: tuple[str, ...] = ()


class Family:
    """The interface every family implements (see the module docstring)."""

    name: str = ""
    description: str = ""
    multi_person: bool = False  # several people per image (each found person is listed apart)
    camera_space: bool = False  # `joint_extras` takes focal, principal and root_depth (3-D joints in camera space)
    person_crops: bool = False  # `evaluate` scores person crops and takes `crops=n` (evaluate/crops.py)

    # ---- spec section
    def output_names(self, head: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def head(self, recipe) -> dict:
        """The family's settings from the recipe, as written into spec.json's `head`."""
        return {}

    def canonical(self, raw: Any, head: dict, where: str | None = None) -> dict:
        """A model's raw output (one tensor, or a list) -> {canonical name: tensor} (TF graph code)."""
        raise NotImplementedError

    def planned_channels(self, recipe, keypoints: int) -> dict[str, int]:
        """Channels of each output of a registered architecture, before it is built."""
        raise NotImplementedError

    def check_outputs(self, recipe, size: tuple[int, int], shapes: dict[str, tuple[int, ...]], where: Callable) -> int:
        """Check the canonical outputs' shapes against the recipe; return the output stride."""
        raise NotImplementedError

    # ---- verification
    def parity(self, reference: Outputs, candidate: Outputs, names: list[str], spec) -> dict:
        raise NotImplementedError

    def parity_checks(self, metrics: dict, max_abs: float, min_agreement: float) -> list:
        raise NotImplementedError

    def find_people(self, outputs: Outputs, names: list[str], spec) -> dict:
        raise NotImplementedError

    def people_check(self, metrics: dict) -> dict:
        raise NotImplementedError

    def log_parity(self, metrics: dict) -> str:
        return ""

    def log_people(self, metrics: dict) -> str:
        return ""

    # ---- training (train/loop.py)
    def train_examples(self, ds) -> int:
        """How many training examples a split gives (epochs are counted in these)."""
        return len(ds)

    def train_dataset(self, ds, pre, keypoints, stride: int, head: dict, **options):
        """tf.data batches of (input, targets) for `train_loss`; `options` are build_dataset's."""
        raise NotImplementedError

    def train_loss(self, outputs: list, targets, settings):
        """Per-image loss [B] of the model's supervised outputs against the targets."""
        raise NotImplementedError

    def validate(self, model, pre, keypoints, stride: int, head: dict, val_ds) -> dict:
        """`val_<metric>` values and `primary` of the model being trained, on the validation split."""
        raise NotImplementedError

    # ---- accuracy, drawing, glue
    def evaluate(self, runner, spec, ds, **options):
        """An EvalResult of the runner on the split; `options` as evaluator.evaluate takes them
        (`crops` only where `person_crops`)."""
        raise NotImplementedError

    def detect(self, outputs: Outputs, spec, affine) -> list[np.ndarray]:
        """One sample's outputs -> each person's [K, 3] (x, y, confidence) in source pixels (absent: -1)."""
        raise NotImplementedError

    def draw_threshold(self, spec) -> float:
        """Confidence from which `predict`, the report and the apps draw a keypoint."""
        return spec.decode.threshold

    def glue_files(self, platform: str, spec, package: str | None) -> dict[str, str]:
        """The family's own app sources (path in the glue folder -> text), beside the common glue."""
        return {}

    def glue_estimator(self, spec) -> GlueEstimator:
        """What the app's PoseEstimator reads and which decoder makes people of it. A family
        without one has no app glue yet: refused, rather than glue that misreads its outputs."""
        from mdeploy.errors import InputError

        raise InputError(
            f"mdeploy does not generate app glue for {self.description} models yet (family {self.name})",
            hint="remove the recipe's app section; the family's decoder sources can still be rendered on their own",
        )

    def joint_extras(self, outputs: Outputs, spec, affine) -> list[list[dict]] | None:
        """Per person, per joint: what `predict --json` adds beside x, y and confidence (e.g. depth)."""
        return None

    def skeleton3d(self, outputs: Outputs, spec, affine) -> np.ndarray | None:
        """One sample's person as [K, 3] joints in mm relative to the set's root joint (x right,
        y down, z away from the camera), which the report draws in 3-D per artifact; None for a
        family whose outputs have no depth (the report then draws no 3-D tiles)."""
        return None


FAMILIES: Registry[Callable[[], Family]] = Registry("model family")


def _lazy(module: str, cls: str) -> Callable[[], Family]:
    def make() -> Family:
        import importlib

        return getattr(importlib.import_module(module), cls)()

    return make


FAMILIES.register("heatmap", _lazy("mdeploy.families.heatmap", "HeatmapFamily"))
FAMILIES.register("paf", _lazy("mdeploy.families.paf", "PafFamily"))
FAMILIES.register("volumetric", _lazy("mdeploy.families.volumetric", "VolumetricFamily"))

_INSTANCES: dict[str, Family] = {}


def get_family(name: str) -> Family:
    if name not in _INSTANCES:
        _INSTANCES[name] = FAMILIES.get(name)()
    return _INSTANCES[name]


def family_of(spec) -> Family:
    """The family of a ModelSpec (specs written before families are single-person heatmaps)."""
    return get_family(getattr(spec, "family", "heatmap") or "heatmap")


def recipe_family(recipe) -> str:
    """The family a recipe's model belongs to: `model.family`, else its architecture's, else heatmap."""
    given = getattr(recipe.model, "family", None)
    if given:
        return given
    if recipe.model.arch is not None:
        from mdeploy.models import get_arch

        return get_arch(recipe.model.arch).output_family
    return "heatmap"


def run_outputs(runner, batch: np.ndarray) -> Outputs:
    """Every named output of a runner (a runner that knows one output gives `heatmaps`)."""
    from mdeploy.spec import OUTPUT_NAME

    many = getattr(runner, "outputs", None)
    if many is not None:
        return many(batch)
    return {OUTPUT_NAME: np.asarray(runner(batch), np.float32)}
