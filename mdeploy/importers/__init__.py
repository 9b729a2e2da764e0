"""Importers: one module per source format, each turning a model file into a TF callable.

Every importer returns a `LoadedModel`; `canonical.write_canonical` turns that into the
canonical fixed-batch SavedModel (input `image`, output `heatmaps`) that every export
stage reads. Importers are registered by format name and imported lazily (they pull in
TensorFlow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdeploy.registry import Registry, lazy


@dataclass
class LoadedModel:
    """A model ready to be wrapped: `fn(image[1,H,W,3]) -> heatmaps`, plus what it declared."""

    fn: Callable[[Any], Any]
    input_shape: tuple[int | None, ...]  # as declared by the model (None = dynamic)
    input_dtype: str
    keep: Any = None  # objects that own the variables `fn` reads (tracked when saving)
    source: dict = field(default_factory=dict)  # format, tensor names, file


IMPORTERS: Registry[Callable[..., LoadedModel]] = Registry("import format")
IMPORTERS.register("keras", lazy("mdeploy.importers.keras", "load"))
IMPORTERS.register("saved_model", lazy("mdeploy.importers.saved_model", "load"))
IMPORTERS.register("frozen_pb", lazy("mdeploy.importers.frozen_pb", "load"))
IMPORTERS.register("onnx", lazy("mdeploy.importers.onnx", "load"))


def importer_for(recipe) -> Callable[..., LoadedModel]:
    """The importer of `recipe.model.import`: its format's, except a volumetric model's ONNX file, which is
    read as PyTorch exports it (channels first; raw volume or soft-argmax coordinates: importers/onnx_nchw.py)."""
    section = recipe.model.import_
    if section.format == "onnx":
        from mdeploy.families import get_family, recipe_family

        if recipe_family(recipe) == "volumetric":
            from mdeploy.keypoints import get_keypoint_set

            head = get_family("volumetric").head(recipe)
            joints, depth = len(get_keypoint_set(recipe.model.keypoints)), int(head["layout"]["depth"])

            def load_nchw(section, path, where) -> LoadedModel:
                from mdeploy.importers.onnx_nchw import load

                return load(path, joints, depth, where, section)

            return load_nchw
    return IMPORTERS.get(section.format)
