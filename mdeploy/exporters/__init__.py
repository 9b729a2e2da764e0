"""Exporters: one module per target format, registered by name.

An exporter turns the canonical SavedModel into one or more artifacts. It declares its
targets as data (artifact id, file name, recipe settings that key its cache, the tools it
calls, the default parity tolerance of each target); planning a build reads only these
declarations, so no framework is imported until a target actually runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.registry import Registry


@dataclass(frozen=True)
class Tolerance:
    max_abs: float
    min_agreement: float


@dataclass(frozen=True)
class ExportTarget:
    artifact_id: str  # "tflite/fp16": what recipes, manifests and tolerances call it
    format: str  # runner format: "tflite", "onnx", ...
    variant: str | None
    filename: str  # path inside the build folder
    settings: dict[str, Any]  # recipe values the artifact depends on (its cache key)
    tools: tuple[str, ...]
    tolerance: Tolerance
    run: Callable[..., dict]  # (target, saved_model_dir, spec, out_path, log) -> details
    describe: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


EXPORTERS: Registry[Callable[[Any], list[ExportTarget]]] = Registry("export format")


def export_targets(recipe) -> list[ExportTarget]:
    """Every artifact the recipe's `export` section asks for, in a stable order."""
    targets: list[ExportTarget] = []
    for fmt in ("tflite", "onnx", "coreml", "mace"):
        if getattr(recipe.export, fmt) is not None and fmt in EXPORTERS:
            targets += EXPORTERS.get(fmt)(recipe)
    return targets


def _register_builtin() -> None:
    from mdeploy.exporters import tflite

    EXPORTERS.register("tflite", tflite.targets)


_register_builtin()
