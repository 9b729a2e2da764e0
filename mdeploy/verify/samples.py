"""Deterministic parity inputs shaped and preprocessed by the ModelSpec.

Random images (seeded; white noise and smooth low-frequency patterns) cover the input
range; real photos of people shipped inside installed packages (scikit-image's
astronaut, matplotlib's Grace Hopper portrait) exercise the model on the kind of input
it will see; users may add their own images. Every sample goes through
`Preprocessing.apply`, the same path evaluation and prediction use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError
from mdeploy.images import PACKAGE_PHOTOS, load_rgb, package_photo  # noqa: F401 (image loading lives in mdeploy.images)
from mdeploy.spec import ModelSpec


@dataclass(frozen=True)
class Sample:
    name: str
    input: np.ndarray  # [H, W, 3] float32, model-ready


def random_pixels(height: int, width: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """White noise for even indices, smooth blobs (upsampled 6x6 noise) for odd ones; 0..255."""
    if index % 2 == 0:
        return rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    from PIL import Image

    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def parity_samples(spec: ModelSpec, section, where=lambda *k: None) -> list[Sample]:
    """The samples named by a recipe's `verify.samples` section, in a fixed order."""
    pre = spec.preprocessing
    rng = np.random.default_rng(section.seed)
    samples = [
        Sample(f"random:{i}", pre.normalize(random_pixels(pre.height, pre.width, i, rng))) for i in range(section.random)
    ]
    if section.photos:
        samples += [Sample(f"photo:{name}", pre.apply(package_photo(name))[0]) for name in PACKAGE_PHOTOS]
    for index, path in enumerate(section.images):
        try:
            rgb = load_rgb(path)
        except InputError as err:
            raise InputError(err.message, where=where("verify", "samples", "images", index)) from err
        samples.append(Sample(f"image:{Path(path).name}", pre.apply(rgb)[0]))
    return samples
