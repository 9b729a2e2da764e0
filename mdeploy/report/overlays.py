"""Keypoint overlays: the same images through every artifact, side by side.

Each sample image becomes one PNG: a tile per artifact (the canonical model first) with the
skeleton it finds drawn on the image, so what quantization or a runtime does to the poses is
visible at a glance. Artifacts that cannot run on this host get a tile saying why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.limits import is_plain
from mdeploy.report.manifest import load_manifest

TILE_HEIGHT = 256
LABEL_HEIGHT = 22
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


def render(build_dir: Path, out_dir: Path, images: list[tuple[str, np.ndarray]]) -> list[dict]:
    """Write one overlay PNG per image into `out_dir`; returns their descriptions."""
    from PIL import Image, ImageDraw, ImageFont

    from mdeploy.predict import Predictor, draw_pose
    from mdeploy.runners import open_runner
    from mdeploy.spec import ModelSpec

    font = ImageFont.load_default(size=14)
    manifest = load_manifest(build_dir)
    spec = ModelSpec.load(build_dir / "model" / "spec.json")
    threshold = spec.decode.threshold
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
    described = []
    for name, rgb in images:
        scale = TILE_HEIGHT / rgb.shape[0]
        width = max(1, int(round(rgb.shape[1] * scale)))
        tiles = []
        for artifact_id, predictor, why in predictors:
            tile = Image.new("RGB", (width, TILE_HEIGHT + LABEL_HEIGHT), (250, 250, 250))
            if predictor is not None:
                points = predictor(rgb)
                drawn = Image.fromarray(draw_pose(rgb, points, spec.keypoints, threshold)).resize((width, TILE_HEIGHT))
                tile.paste(drawn, (0, LABEL_HEIGHT))
            else:
                grey = Image.fromarray(rgb).convert("L").convert("RGB").resize((width, TILE_HEIGHT))
                tile.paste(grey, (0, LABEL_HEIGHT))
                ImageDraw.Draw(tile).text((6, LABEL_HEIGHT + TILE_HEIGHT // 2), why or "", fill=(200, 0, 0), font=font)
            ImageDraw.Draw(tile).text((6, 3), artifact_id, fill=(0, 0, 0), font=font)
            tiles.append(tile)
        strip = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), TILE_HEIGHT + LABEL_HEIGHT), (255, 255, 255))
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width + 4
        file = out_dir / f"{name}.png"
        strip.save(file, format="PNG")
        described.append({"sample": name, "image": file.name, "artifacts": [a for a, _, _ in predictors],
                          "unavailable": {a: why for a, _, why in predictors if why}})
    return described
