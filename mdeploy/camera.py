"""A camera as data: intrinsics, lens distortion and pose, and the projections 3-D pose needs.

One home for the pinhole model the 3-D family reads everywhere: the Human3.6M reader
projects its joints with it, the synthetic 3-D people are rendered through it, and the
volumetric decode back-projects through it, so a point projected by one and lifted by
another lands where it started.

Conventions: camera space is x right, y down, z forward (away from the lens), millimetres;
image points are pixels in the camera's own pixel convention (whatever its principal point
was calibrated in). `rotation` and `position` place the camera in a world frame:
camera = rotation.T @ (world - position), the form Human3.6M's camera files use (mmpose
ships them so). Distortion follows Human3.6M's own projection (radial k1..k3 and its
tangential form, which differs from OpenCV's by a factor 2 on the cross terms); a camera
without distortion is the plain pinhole that apps use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdeploy.errors import InputError

INTRINSICS = ("fx", "fy", "cx", "cy")


@dataclass(frozen=True)
class Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    radial: tuple[float, float, float] = (0.0, 0.0, 0.0)  # k1, k2, k3
    tangential: tuple[float, float] = (0.0, 0.0)  # p1, p2 (Human3.6M's form)
    rotation: tuple[tuple[float, ...], ...] | None = None  # 3x3, camera axes in world coordinates
    position: tuple[float, float, float] | None = None  # camera centre in world coordinates (mm)

    @property
    def distorted(self) -> bool:
        return any(self.radial) or any(self.tangential)

    def matrix(self) -> np.ndarray:
        """The 3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] world points -> camera space (needs the camera's pose)."""
        if self.rotation is None or self.position is None:
            raise InputError("this camera has no pose (rotation and position): world points cannot be moved into it")
        r = np.asarray(self.rotation, np.float64)
        return (np.asarray(points, np.float64) - np.asarray(self.position, np.float64)) @ r

    def project(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] camera-space points -> [..., 2] image pixels (with the lens distortion, if any)."""
        p = np.asarray(points, np.float64)
        z = p[..., 2:3]
        if np.any(z <= 0):
            raise InputError("a point lies at or behind the camera (depth <= 0): it has no image")
        xy = p[..., :2] / z
        if self.distorted:
            xy = self.distort(xy)
        return xy * np.array([self.fx, self.fy]) + np.array([self.cx, self.cy])

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """Normalised image points -> distorted normalised points (Human3.6M's lens model)."""
        k1, k2, k3 = self.radial
        p1, p2 = self.tangential
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        scale = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3 + p1 * y + p2 * x
        return np.stack([x * scale + p2 * r2, y * scale + p1 * r2], axis=-1)

    def back_project(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """[..., 2] pixels at [...] depths (mm along z) -> [..., 3] camera space, pinhole only.

        The inverse of `project` for a camera without distortion (the apps' model); with
        distortion the points are lifted as if the lens were ideal, which a caller that cares
        undistorts first.
        """
        uv = np.asarray(uv, np.float64)
        z = np.asarray(depth, np.float64)
        x = (uv[..., 0] - self.cx) / self.fx * z
        y = (uv[..., 1] - self.cy) / self.fy * z
        return np.stack([x, y, np.broadcast_to(z, x.shape)], axis=-1)

    def cropped(self, box: tuple[float, float, float, float], size: tuple[int, int]) -> Camera:
        """The camera of a crop: `box` (x, y, w, h) of this camera's image resized to `size` (h, w)."""
        x0, y0, bw, bh = box
        sx, sy = size[1] / bw, size[0] / bh
        return Camera(self.fx * sx, self.fy * sy, (self.cx - x0) * sx, (self.cy - y0) * sy, self.radial, self.tangential,
                      self.rotation, self.position)

    def to_json(self) -> dict:
        data: dict = {"f": [self.fx, self.fy], "c": [self.cx, self.cy]}
        if self.distorted:
            data["k"] = list(self.radial)
            data["p"] = list(self.tangential)
        if self.rotation is not None and self.position is not None:
            data["R"] = [list(r) for r in self.rotation]
            data["T"] = list(self.position)
        return data

    @classmethod
    def from_json(cls, data: dict, *, where: str | None = None, source: str = "camera") -> Camera:
        """A camera from {"f": [fx, fy], "c": [cx, cy]} (optional "k", "p", "R", "T")."""
        try:
            fx, fy = (float(v) for v in np.asarray(data["f"], np.float64).reshape(-1)[:2])
            cx, cy = (float(v) for v in np.asarray(data["c"], np.float64).reshape(-1)[:2])
            radial = tuple(float(v) for v in np.asarray(data.get("k", (0, 0, 0)), np.float64).reshape(-1)[:3])
            tangential = tuple(float(v) for v in np.asarray(data.get("p", (0, 0)), np.float64).reshape(-1)[:2])
            rotation = position = None
            if data.get("R") is not None and data.get("T") is not None:
                rotation = tuple(tuple(float(v) for v in row) for row in np.asarray(data["R"], np.float64).reshape(3, 3))
                position = tuple(float(v) for v in np.asarray(data["T"], np.float64).reshape(3))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{source}: not a camera ({err}); expected f: [fx, fy] and c: [cx, cy] in pixels", where=where) from None
        if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
            raise InputError(f"{source}: focal lengths must be positive and finite, got f = [{fx}, {fy}]", where=where)
        return cls(fx, fy, cx, cy, radial + (0.0,) * (3 - len(radial)), tangential + (0.0,) * (2 - len(tangential)), rotation, position)


def camera_from(focal=None, principal=None, *, source: str = "back-projection") -> Camera:
    """A pinhole camera from focal (fx, fy) and principal point (cx, cy), or a clear InputError
    naming what is missing (an app must supply both to lift a pose into camera space)."""
    missing = [name for name, value in (("focal length (fx, fy)", focal), ("principal point (cx, cy)", principal)) if value is None]
    if missing:
        raise InputError(
            f"{source} needs the camera's {' and '.join(missing)}",
            hint="pass the intrinsics in pixels of the source image (from the phone's camera API or a calibration), "
            "or ask for root-relative joints without back-projection",
        )
    f = np.asarray(focal, np.float64).reshape(-1)
    c = np.asarray(principal, np.float64).reshape(-1)
    if f.size == 1:
        f = np.repeat(f, 2)
    if f.size != 2 or c.size != 2:
        raise InputError(f"{source}: focal must be one or two numbers and the principal point two, got {f.size} and {c.size}")
    return Camera.from_json({"f": f.tolist(), "c": c.tolist()}, source=source)
