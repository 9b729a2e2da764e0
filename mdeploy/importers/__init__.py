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
