"""Unlabelled images from folders (`data.calibration: {images: {folders: [...]}}`).

What an int8 variant calibrates and fine-tunes on needs no labels: frames like the ones the app
will see. Each image is one sample fed whole (`crop = "image"`), through the model's
preprocessing, as an app feeds a camera frame. Images are read in sorted path order, so a
folder gives the same calibration set on every machine. Every file's header is read when the
split is loaded, so a file that is no image, or too large, fails before any conversion starts;
pixels are decoded when the image is fed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.data.coco import Dataset, Sample
from mdeploy.errors import InputError
from mdeploy.keypoints import KeypointSet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_files(folders: list[Path], recursive: bool = False, *, where: str | None = None) -> list[Path]:
    """The image files of `folders` (and their subfolders with `recursive`), sorted within each folder."""
    found: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"image folder not found: {folder}", where=where)
        pattern = folder.rglob("*") if recursive else folder.iterdir()
        found.extend(sorted(p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    if not found:
        raise InputError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, folders))}"
            + ("" if recursive else " (recursive: true also reads subfolders)"),
            where=where,
        )
    return list(dict.fromkeys(found))  # a folder listed twice, or inside another with recursive


def load_images(folders: list[Path], keypoints: KeypointSet, *, recursive: bool = False, where: str | None = None) -> Dataset:
    """A dataset of whole images without people: each sample's keypoints are unlabelled."""
    from mdeploy.limits import open_image

    samples = []
    unlabelled = np.zeros((len(keypoints.names), 3), np.float32)
    for path in image_files(folders, recursive, where=where):
        with open_image(path, where=where) as img:
            width, height = img.size
        samples.append(Sample(image=path, width=width, height=height, keypoints=unlabelled,
                              bbox=(0.0, 0.0, float(width), float(height))))
    return Dataset(samples=samples, crop="image", skipped=0, source=Path(folders[0]), layout="images",
                   notes=[f"{len(samples)} unlabelled images"])


def image_listing(images, where: str | None = None) -> list[tuple[int, str, int, int]]:
    """(folder index, path within that folder, size, modification time) of every image of an
    `images` source, for cache keys and provenance: an image added, removed or rewritten changes
    it (the pixels are not hashed); a checkout moved elsewhere does not."""
    folders = [Path(f) for f in images.folders]
    listing = []
    for path in image_files(folders, images.recursive, where=where):
        index = next(i for i, f in enumerate(folders) if path.is_relative_to(f))
        st = path.stat()
        listing.append((index, path.relative_to(folders[index]).as_posix(), st.st_size, int(st.st_mtime)))
    return listing
