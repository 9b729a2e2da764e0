"""Reading images: a file as RGB pixels, and the photos of people shipped inside installed packages.

One home for every reader: evaluation (dataset images), prediction (`mdeploy predict`),
verification (parity samples), the import probe and the report's overlays all load
images through `load_rgb`, so a bound or a fix applies to all of them at once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError

# (package, resource path inside it): public-domain photos of people.
PACKAGE_PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def load_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8: a regular file within the pixel budget (mdeploy.limits)."""
    from mdeploy.limits import open_image

    try:
        with open_image(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as err:  # not found, unreadable, or a decoder error (truncated data)
        raise InputError(f"cannot read image {path}: {err}") from err


def package_photo(name: str) -> np.ndarray:
    package, resource = PACKAGE_PHOTOS[name]
    return load_rgb(Path(str(resources.files(package).joinpath(resource))))
