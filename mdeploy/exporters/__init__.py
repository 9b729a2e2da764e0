"""Exporters: one module per target format, registered by name.

An exporter turns the canonical SavedModel into one or more artifacts. It declares its
targets as data (artifact id, file name, recipe settings that key its cache, the tools it
calls, the default parity tolerance of each target); planning a build reads only these
declarations, so no framework is imported until a target actually runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    filename: str  # path inside the build folder (a file, or a folder such as an .mlpackage)
    settings: dict[str, Any]  # recipe values the artifact depends on (its cache key)
    tools: tuple[str, ...]
    tolerance: Tolerance
    run: Callable[..., dict]  # (target, ExportInputs) -> details for the manifest
    describe: str = ""
    calibration_split: str | None = None  # data split whose images calibrate this target
    calibration_samples: int = 0
    runnable_here: Callable[[], str | None] = lambda: None  # why parity cannot run on this host, or None
    extra_files: tuple[str, ...] = ()  # further files written beside `filename` (same stage)
    # What the format converts from, when not the canonical SavedModel as it is: a context manager
    # (target, ExportInputs) -> ExportInputs, held for the whole export stage (conversion and any search).
    source: Callable[..., Any] | None = None


@dataclass
class ExportInputs:
    """What an exporter reads: the canonical model, its spec, where to write, calibration data."""

    saved_model: Path
    spec: Any  # ModelSpec
    out: Path
    log: Callable[[str], None]
    calibration: Callable[[], Iterator[Any]] | None = None  # yields [1, H, W, 3] float32 inputs
    rewrites: dict[str, Any] | None = None  # what `ExportTarget.source` changed in the graph (for the manifest)
    # The source without one of those rewrites, by the rewrite's manifest key (made when asked):
    # what the exporter converts instead when that rewrite turns out to hurt the converted file.
    fallbacks: dict[str, Callable[[], Path]] | None = None


EXPORTERS: Registry[Callable[[Any, Path], list[ExportTarget]]] = Registry("export format")


def export_targets(recipe, build_dir: Path) -> list[ExportTarget]:
    """Every artifact the recipe's `export` section asks for, in a stable order."""
    from mdeploy.importers.tflite import check_exports

    check_exports(recipe)  # a .tflite import builds only tflite/fp32
    targets: list[ExportTarget] = []
    for fmt in ("tflite", "onnx", "coreml", "mace"):
        if getattr(recipe.export, fmt) is not None and fmt in EXPORTERS:
            targets += EXPORTERS.get(fmt)(recipe, build_dir)
    return targets


def _register_builtin() -> None:
    from mdeploy.exporters import coreml, mace, onnx, tflite

    EXPORTERS.register("tflite", tflite.targets)
    EXPORTERS.register("onnx", onnx.targets)
    EXPORTERS.register("coreml", coreml.targets)
    EXPORTERS.register("mace", mace.targets)


_register_builtin()
