"""Volumetric 3-D pose outputs as data, and their decode: soft-argmax -> crop -> image -> camera.

A MobileHumanPose-style model (FACTS §10) turns a person crop into one volume per joint:
D depth bins x H x W cells. mdeploy's canonical model is NHWC, so the volumes sit in the
channels of a [1, H, W, J*D] tensor; `VolumeLayout` says how (`joint_major`: channel
j*D + d, the order a PyTorch [1, J*D, H, W] export keeps once transposed; `depth_major`:
d*J + j). A PyTorch export read as it is (channels first) is handled by `channels_first`.

Decode, per joint:
1. softmax over the joint's whole D*H*W volume, then expectations (soft-argmax) give x, y
   in cells and z in bins;
2. cells -> model-input pixels: with `cell_origin = "centre"` (mdeploy's, as the 2-D
   heatmap decode) cell i covers input pixels [i*s, (i+1)*s) and its centre is (i + 0.5)*s;
   with "corner" (the MobileHumanPose repository's training targets) input = i*s. Then the
   spec's `Affine` (Preprocessing.geometry of the crop box) maps input pixels back to the
   source image, continuous pixel coordinates throughout;
3. bins -> millimetres relative to the root: (z/D*2 - 1) * depth_range/2 (the repository's
   formula: a 2 m volume centred on the root by default), plus the root's depth when known;
4. optionally back to camera space with the focal length and principal point (pixels of the
   source image): X = (u - cx)/fx * Z, Y = (v - cy)/fy * Z. That needs the root's absolute
   depth (from ground truth, or a root-depth estimate the app supplies) and the intrinsics;
   without them the decode says so (InputError, exit 2).

`encode` is the inverse for training: the (x, y, z) target per joint, in the same units the
soft-argmax returns, for an L1 loss on the soft-argmax output as MobileHumanPose trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdeploy.camera import Camera, camera_from
from mdeploy.errors import InputError
from mdeploy.spec import Affine

ORDERS = ("joint_major", "depth_major")
CELL_ORIGINS = ("centre", "corner")
DEFAULT_DEPTH_RANGE_MM = 2000.0


@dataclass(frozen=True)
class VolumeLayout:
    """How J joint volumes of D depth bins over an H x W grid sit in a model's output channels."""

    joints: int
    depth: int  # D: depth bins per joint
    height: int
    width: int
    order: str = "joint_major"  # channel = j*D + d ("depth_major": d*J + j)
    depth_range_mm: float = DEFAULT_DEPTH_RANGE_MM  # the volume spans +-depth_range/2 around the root
    cell_origin: str = "centre"  # "centre": cell i is input (i + 0.5) * stride; "corner": i * stride

    def __post_init__(self):
        for name in ("joints", "depth", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"volume layout: {name} must be at least 1, got {getattr(self, name)}")
        if self.order not in ORDERS:
            raise InputError(f"volume layout: order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.cell_origin not in CELL_ORIGINS:
            raise InputError(f"volume layout: cell_origin must be one of {', '.join(CELL_ORIGINS)}, got {self.cell_origin!r}")
        if not (self.depth_range_mm > 0 and np.isfinite(self.depth_range_mm)):
            raise InputError(f"volume layout: depth_range_mm must be positive, got {self.depth_range_mm}")

    @property
    def channels(self) -> int:
        return self.joints * self.depth

    def channel(self, joint: int, bin_: int) -> int:
        """The output channel that holds depth bin `bin_` of joint `joint`."""
        return joint * self.depth + bin_ if self.order == "joint_major" else bin_ * self.joints + joint

    @classmethod
    def from_shape(cls, shape, joints: int, *, channels_first: bool = False, **options) -> VolumeLayout:
        """The layout of a [1, H, W, J*D] tensor (or [1, J*D, H, W] with channels_first) for J joints.

        A channel count that is not a multiple of the joint count is bad input: the model does
        not emit a volume per joint (InputError with the numbers).
        """
        shape = tuple(int(d) for d in shape)
        if len(shape) == 3:
            shape = (1, *shape)
        if len(shape) != 4:
            raise InputError(f"a volumetric output must have 4 dimensions [1, H, W, joints x depth], got shape {list(shape)}")
        _, a, b, c = shape
        h, w, channels = (b, c, a) if channels_first else (a, b, c)
        if joints < 1 or channels % joints:
            other = f" (channels last it would be {c})" if channels_first else ""
            raise InputError(
                f"the volumetric output has {channels} channels{other}, which do not divide into {joints} joints x depth bins",
                hint=f"a {joints}-joint model with D depth bins outputs {joints}*D channels (e.g. {joints * 32} for D = 32); "
                "check the keypoint set, and whether the tensor is channels first (NCHW) or last (NHWC)",
            )
        return cls(joints, channels // joints, h, w, **options)

    def to_json(self) -> dict:
        return {
            "joints": self.joints,
            "depth": self.depth,
            "height": self.height,
            "width": self.width,
            "order": self.order,
            "depth_range_mm": self.depth_range_mm,
            "cell_origin": self.cell_origin,
            "channels": self.channels,
        }

    @classmethod
    def from_json(cls, data: dict) -> VolumeLayout:
        return cls(
            int(data["joints"]), int(data["depth"]), int(data["height"]), int(data["width"]),
            data.get("order", "joint_major"), float(data.get("depth_range_mm", DEFAULT_DEPTH_RANGE_MM)),
            data.get("cell_origin", "centre"),
        )

    # ------------------------------------------------------------------ tensors

    def volumes(self, output: np.ndarray, *, channels_first: bool = False) -> np.ndarray:
        """[N, H, W, C] (or [H, W, C]; [N, C, H, W] with channels_first) -> [N, J, D, H, W]."""
        x = np.asarray(output)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise InputError(f"a volumetric output must have 4 dimensions, got shape {list(x.shape)}")
        if channels_first:
            x = x.transpose(0, 2, 3, 1)
        n, h, w, c = x.shape
        if (h, w) != (self.height, self.width) or c != self.channels:
            if c % self.joints:
                raise InputError(
                    f"the volumetric output has {c} channels, which do not divide into {self.joints} joints x depth bins"
                )
            raise InputError(
                f"the volumetric output is {h}x{w} with {c} channels; the layout expects {self.height}x{self.width} "
                f"with {self.joints} joints x {self.depth} depth bins = {self.channels} channels"
            )
        if self.order == "joint_major":
            v = x.reshape(n, h, w, self.joints, self.depth)  # channel j*D + d
        else:
            v = x.reshape(n, h, w, self.depth, self.joints).transpose(0, 1, 2, 4, 3)  # channel d*J + j
        return v.transpose(0, 3, 4, 1, 2)

    def to_output(self, volumes: np.ndarray, *, channels_first: bool = False) -> np.ndarray:
        """[N, J, D, H, W] -> the model's [N, H, W, C] tensor (the inverse of `volumes`)."""
        v = np.asarray(volumes)
        n = v.shape[0]
        x = v.transpose(0, 3, 4, 1, 2)  # N, H, W, J, D
        if self.order == "depth_major":
            x = x.transpose(0, 1, 2, 4, 3)
        x = x.reshape(n, self.height, self.width, self.channels)
        return x.transpose(0, 3, 1, 2) if channels_first else x

    # ------------------------------------------------------------------ units

    def cells_to_input(self, x, y, input_size: tuple[int, int]):
        """Soft-argmax cells -> model-input pixels (continuous), for an input of `input_size` (h, w)."""
        sx, sy = input_size[1] / self.width, input_size[0] / self.height
        half = 0.5 if self.cell_origin == "centre" else 0.0
        return (np.asarray(x, np.float64) + half) * sx, (np.asarray(y, np.float64) + half) * sy

    def input_to_cells(self, u, v, input_size: tuple[int, int]):
        sx, sy = input_size[1] / self.width, input_size[0] / self.height
        half = 0.5 if self.cell_origin == "centre" else 0.0
        return np.asarray(u, np.float64) / sx - half, np.asarray(v, np.float64) / sy - half

    def bins_to_mm(self, z) -> np.ndarray:
        """Soft-argmax depth bins -> millimetres relative to the root (nearer the camera is negative)."""
        return (np.asarray(z, np.float64) / self.depth * 2.0 - 1.0) * (self.depth_range_mm / 2.0)

    def mm_to_bins(self, depth_mm) -> np.ndarray:
        return (np.asarray(depth_mm, np.float64) / (self.depth_range_mm / 2.0) + 1.0) * self.depth / 2.0


def soft_argmax(volumes: np.ndarray) -> np.ndarray:
    """[N, J, D, H, W] raw scores -> [N, J, 3] expectations (x, y in cells, z in bins).

    Softmax over each joint's whole volume (max subtracted first, float64), then the
    expected cell index along each axis: the decode MobileHumanPose trains through.
    """
    v = np.asarray(volumes, np.float64)
    if v.ndim != 5:
        raise InputError(f"soft-argmax needs [N, J, D, H, W] volumes, got shape {list(v.shape)}")
    n, j, d, h, w = v.shape
    flat = v.reshape(n, j, -1)
    flat = np.exp(flat - flat.max(axis=2, keepdims=True))
    p = (flat / flat.sum(axis=2, keepdims=True)).reshape(n, j, d, h, w)
    ex = (p.sum(axis=(2, 3)) * np.arange(w)).sum(axis=2)
    ey = (p.sum(axis=(2, 4)) * np.arange(h)).sum(axis=2)
    ez = (p.sum(axis=(3, 4)) * np.arange(d)).sum(axis=2)
    return np.stack([ex, ey, ez], axis=2)


@dataclass(frozen=True)
class Pose3D:
    """One decoded person: image pixels, root-relative depth and, when asked, camera space."""

    image: np.ndarray  # [J, 2] source-image pixels (continuous coordinates)
    depth: np.ndarray  # [J] mm: relative to the root, or absolute when the root depth was given
    relative: bool  # depth is root-relative (no root depth given)
    camera: np.ndarray | None = None  # [J, 3] camera space (mm), when back-projected

    def to_json(self) -> dict:
        return {
            "image": np.round(self.image, 3).tolist(),
            "depth_mm": np.round(self.depth, 2).tolist(),
            "depth_relative_to_root": self.relative,
            "camera_mm": None if self.camera is None else np.round(self.camera, 2).tolist(),
        }


def decode_coords(
    coords: np.ndarray,
    layout: VolumeLayout,
    input_size: tuple[int, int],
    affine: Affine | None = None,
    *,
    root_depth: float | None = None,
    camera: Camera | None = None,
    back_project: bool = False,
) -> Pose3D:
    """[J, 3] soft-argmax output (cells, cells, bins) of one person -> a `Pose3D`.

    `affine` is the crop's source -> input map (Preprocessing.geometry with the person box);
    None keeps model-input pixels. `back_project` needs `camera` (intrinsics in source-image
    pixels) and `root_depth` (mm); either missing is an InputError that names it.
    """
    c = np.asarray(coords, np.float64)
    if c.ndim != 2 or c.shape != (layout.joints, 3):
        raise InputError(f"expected soft-argmax coordinates [{layout.joints}, 3], got shape {list(c.shape)}")
    u, v = layout.cells_to_input(c[:, 0], c[:, 1], input_size)
    if affine is not None:
        u, v = affine.to_source(u, v)
    image = np.stack([u, v], axis=1)
    depth = layout.bins_to_mm(c[:, 2])
    if root_depth is not None:
        depth = depth + float(root_depth)
    cam_points = None
    if back_project:
        if camera is None:
            camera_from(None, None)  # raises, naming the focal length and principal point
        if root_depth is None:
            raise InputError(
                "back-projection to camera space needs the root joint's depth (mm): the volume only gives depth relative to the root",
                hint="supply the root depth (ground truth or a root-depth estimate such as RootNet's), or decode without back-projection",
            )
        cam_points = camera.back_project(image, depth)
    return Pose3D(image, depth, root_depth is None, cam_points)


def decode(
    output: np.ndarray,
    layout: VolumeLayout,
    input_size: tuple[int, int],
    affine: Affine | None = None,
    *,
    channels_first: bool = False,
    root_depth: float | None = None,
    focal=None,
    principal=None,
    back_project: bool = False,
) -> Pose3D:
    """A model's raw volumetric output for one crop -> a `Pose3D` (see `decode_coords`).

    `focal` (fx, fy) and `principal` (cx, cy) are in source-image pixels; they are needed
    only with `back_project`, and their absence then is an InputError naming them.
    """
    if back_project:
        camera = camera_from(focal, principal)
    else:
        camera = camera_from(focal, principal) if focal is not None and principal is not None else None
    volumes = layout.volumes(output, channels_first=channels_first)
    if volumes.shape[0] != 1:
        raise InputError(f"decode takes one crop at a time, got a batch of {volumes.shape[0]}")
    coords = soft_argmax(volumes)[0]
    return decode_coords(coords, layout, input_size, affine, root_depth=root_depth, camera=camera, back_project=back_project)


def encode(
    image_points: np.ndarray,
    depth_mm: np.ndarray,
    layout: VolumeLayout,
    input_size: tuple[int, int],
    affine: Affine | None = None,
    *,
    root_depth: float | None = None,
) -> np.ndarray:
    """Training targets: [J, 2] source pixels and [J] depths -> [J, 3] (x, y cells, z bins).

    The exact inverse of the decode's mapping, in the units soft-argmax returns, so an L1
    loss on the soft-argmax output trains the network toward these joints. `depth_mm` is
    root-relative unless `root_depth` (its absolute depth) is given.
    """
    pts = np.asarray(image_points, np.float64)
    u, v = (affine.to_input(pts[:, 0], pts[:, 1]) if affine is not None else (pts[:, 0], pts[:, 1]))
    x, y = layout.input_to_cells(u, v, input_size)
    rel = np.asarray(depth_mm, np.float64) - (float(root_depth) if root_depth is not None else 0.0)
    return np.stack([x, y, layout.mm_to_bins(rel)], axis=1)


def target_inside(targets: np.ndarray, layout: VolumeLayout) -> np.ndarray:
    """[J] whether each encoded target lies inside the volume (soft-argmax can reach it)."""
    t = np.asarray(targets, np.float64)
    return (
        (t[:, 0] >= 0) & (t[:, 0] <= layout.width - 1)
        & (t[:, 1] >= 0) & (t[:, 1] <= layout.height - 1)
        & (t[:, 2] >= 0) & (t[:, 2] <= layout.depth - 1)
    )
