"""Keypoint overlays: the same images through every artifact, side by side.

Each sample image becomes one tile per artifact (the canonical model first), a JPEG of the
skeleton it finds drawn on the image, so what quantization or a runtime does to the poses is
visible at a glance. The report lays the tiles out in a grid that wraps: at phone width
they stay large enough to read instead of shrinking a whole strip into the screen, and
their labels are text. Artifacts that cannot run on this host get a greyed tile and the
reason beside it.

Each artifact runs once per image: the same outputs give its overlay tile and, where its
family gives one (`Family.skeleton3d`), the 3-D skeleton the report draws beside
(report/skeletons.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.limits import is_plain
from mdeploy.report.manifest import load_manifest

TILE_HEIGHT = 256
TILES = "tiles"  # overlays/tiles/, beside overlays/sources/
SKIPPED_IDS = ("spec", "train/model", "model/keras")


def sample_images(extra: list[Path] | None = None) -> list[tuple[str, np.ndarray]]:
    """The package photos of people (parity's real photos) plus the given images."""
    from mdeploy.images import PACKAGE_PHOTOS, load_rgb, package_photo

    out = [(name, package_photo(name)) for name in PACKAGE_PHOTOS]
    for path in extra or []:
        out.append((Path(path).stem, load_rgb(path)))
    return out


def _runnable(build_dir: Path, manifest: dict) -> list[tuple[str, str, Path, str | None]]:
    """(artifact id, format, path, reason it cannot run here or None) for every model artifact."""
    import sys

    out = []
    for art in manifest.get("artifacts", []):
        if art["id"] in SKIPPED_IDS or art["id"].startswith("glue/") or art["id"].endswith("/yml"):
            continue
        fmt = art["format"]
        if fmt not in ("saved_model", "tflite", "onnx", "coreml", "mace"):
            continue
        why = None if fmt != "coreml" or sys.platform == "darwin" else "needs macOS"
        if why is None and not is_plain(build_dir / art["path"], build_dir):  # a symlink, FIFO or device is never opened
            why = "not a regular file"
        out.append((art["id"], fmt, build_dir / art["path"], why))
    return out


def render(build_dir: Path, out_dir: Path, images: list[tuple[str, np.ndarray]],
           colours: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """Write a tile per image and artifact under `out_dir`; returns their descriptions, and
    those of the 3-D skeleton tiles (report/skeletons.py; none for a 2-D family).

    Tiles are named by position (tiles/<image nn>/<artifact nn>.jpg), never by an image's
    file name, so no name of a user's file becomes a path in the report. `colours` are the
    artifacts' colours in every plot (plots.artifact_colours), for the 3-D tiles."""
    from PIL import Image

    from mdeploy.families import family_of
    from mdeploy.predict import Predictor
    from mdeploy.report import skeletons
    from mdeploy.runners import open_runner
    from mdeploy.spec import ModelSpec

    manifest = load_manifest(build_dir)
    spec = ModelSpec.load(build_dir / "model" / "spec.json")
    family = family_of(spec)
    predictors = []
    for artifact_id, fmt, path, why in _runnable(build_dir, manifest):
        predictor = None
        if why is None:
            try:
                predictor = Predictor(spec, open_runner(fmt, path))
            except Exception as err:  # a runtime that cannot load the artifact: shown, not fatal
                why = f"cannot run: {str(err).splitlines()[0][:60]}"
        predictors.append((artifact_id, predictor, why))
    out_dir.mkdir(parents=True, exist_ok=True)
    described, skeletons3d = [], []
    for number, (name, rgb) in enumerate(images):
        scale = TILE_HEIGHT / rgb.shape[0]
        width = max(1, int(round(rgb.shape[1] * scale)))
        folder = out_dir / TILES / f"{number:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        tiles, rows = [], []
        for index, (artifact_id, predictor, why) in enumerate(predictors):
            skeleton = None
            if predictor is not None:
                people, skeleton = _decode(family, predictor, rgb)
                tile = Image.fromarray(predictor.draw(rgb, people)).resize((width, TILE_HEIGHT))
            else:  # what it would have run on, greyed: the reason is written beside it in the report
                tile = Image.fromarray(rgb).convert("L").convert("RGB").resize((width, TILE_HEIGHT))
            file = folder / f"{index:02d}.jpg"
            tile.save(file, format="JPEG", quality=90, subsampling=0)  # a photo: a third of a PNG, lines still crisp
            tiles.append({"artifact": artifact_id, "image": file.relative_to(out_dir).as_posix(), "why": why})
            rows.append((artifact_id, skeleton, why))
        described.append({"sample": name, "tiles": tiles, "artifacts": [a for a, _, _ in predictors],
                          "unavailable": {a: why for a, _, why in predictors if why}})
        entry = skeletons.render(out_dir, number, name, rows, spec.keypoints, colours or {})
        if entry is not None:
            skeletons3d.append(entry)
    return described, skeletons3d


def _decode(family, predictor, rgb: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One run of an artifact on an image: the people its overlay draws and its 3-D skeleton (None in 2-D)."""
    from mdeploy.families import run_outputs

    spec = predictor.spec
    x, affine = spec.preprocessing.apply(rgb)
    outputs = run_outputs(predictor.runner, x[None])
    return family.detect(outputs, spec, affine), family.skeleton3d(outputs, spec, affine)
