"""A 3-D data split as the build's stages read splits: recipe sources `coco3d` and `h36m`.

`load_split3d` reads the split (mdeploy/data/h36m.py does the reading) and wraps it in
`Split3D`, which keeps the 3-D frames for the volumetric family's evaluation and training
and offers what the stages ask of every split: `samples` (an image and its person crop box,
for calibration and the evaluation path's `prepare`), `people`, `images`, `notes`, and no
head rule or name mapping (3-D metrics need neither). A person is fed as a crop: the
square box around its joints, grown by the same margin as 2-D person crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.data.h36m import Dataset3D, Frame3D


@dataclass(frozen=True)
class Sample3D:
    """One person of a 3-D split, seen as a 2-D sample (image, 2-D joints, crop box)."""

    frame: Frame3D

    @property
    def image(self) -> Path:
        return self.frame.image

    @property
    def keypoints(self) -> np.ndarray:
        return self.frame.keypoints

    def crop_box(self, crop: str = "person") -> tuple[float, float, float, float]:
        """The person crop (3-D models are always fed person crops, whatever `crop` says)."""
        return self.frame.crop_box()


class Split3D:
    """A `Dataset3D` with the interface the stages use for every split."""

    crop = "person"
    head_rule = None  # no PCKh: 3-D metrics are in mm
    mapping = None

    def __init__(self, data: Dataset3D):
        self.data = data
        self.samples = [Sample3D(f) for f in data.frames]

    def __len__(self) -> int:
        return len(self.data)

    @property
    def frames(self) -> list[Frame3D]:
        return self.data.frames

    @property
    def keypoints(self):
        return self.data.keypoints

    @property
    def people(self) -> int:
        return self.data.people

    @property
    def images(self) -> int:
        return self.data.images

    @property
    def notes(self) -> list[str]:
        return self.data.notes

    def describe(self) -> str:
        return self.data.describe()


def load_split3d(section, annotations: Path, images: Path, keypoints, *, where: str | None = None) -> Split3D:
    """The recipe split `section` (a DataSplit with `coco3d` or `h36m`) mapped onto `keypoints`."""
    from mdeploy.data.h36m import load_coco3d, read_cameras
    from mdeploy.keypoints import get_keypoint_set

    if section.h36m is not None:
        cameras = section.h36m.cameras or Path(annotations).parent / "cameras.pkl"
        data = load_coco3d(annotations, images, keypoints, cameras=read_cameras(cameras, where=where),
                           file_keypoints=get_keypoint_set("h36m17"), where=where, layout="h36m")
    else:
        data = load_coco3d(annotations, images, keypoints, where=where)
    return Split3D(data)
