"""App glue for volumetric 3-D pose models: a Kotlin and a Swift `VolumeDecoder` rendered from data.

The generated decoders apply `mdeploy.evaluate.volumetric.decode` step for step, so an app
reads the same joints the verified model gives in Python: per joint a softmax over its whole
D x H x W volume (maximum subtracted first, doubles throughout) and the expectations
(soft-argmax: x, y in cells, z in bins); cells -> model-input pixels with the layout's cell
convention; input pixels -> source-image pixels through the crop's affine map (the spec's
`Affine`: input = scale * source + offset), which the decoder can also compute from the crop
box with the spec's resize mode; bins -> millimetres relative to the root, plus the root's
depth when the app knows it; and, when asked, back-projection to camera space with the
focal length and principal point. A second entry point takes a model whose export has the
soft-argmax baked in ([1, J, 3]) and skips the softmax.

Everything comes from data: the `VolumeLayout` (joints, depth bins, grid, channel order,
depth range, cell origin), the keypoint set (joint names, root, bones), the model's input
size, the preprocessing's resize mode and the root depth an app assumes (the recipe's constant
one, or none). The channel indexing is rendered for the layout's order, so the generated loop
has no branch on it.

In an app, the common `PoseEstimator` hands the model's one output to `VolumePoseDecoder`
(templates/glue/*/VolumePoseDecoder.*, rendered with the common glue's values), which calls
this decoder with the frame's preprocessing geometry as the crop's affine map and lists the
one person with each keypoint's depth in mm.
"""

from __future__ import annotations

import math

from mdeploy import __version__
from mdeploy.codegen import escape
from mdeploy.codegen.render import environment
from mdeploy.evaluate.volumetric import VolumeLayout
from mdeploy.keypoints import KeypointSet, get_keypoint_set

ANDROID_FILE = "VolumeDecoder.kt"
IOS_FILE = "VolumeDecoder.swift"
RESIZE_MODES = ("stretch", "letterbox", "crop")  # Preprocessing.resize


def _keypoints(keypoints: KeypointSet | str | None, layout: VolumeLayout) -> tuple[str | None, list[str], int, list[list[int]]]:
    """(set name, joint names, root index or -1, bones) for the layout's joints."""
    if keypoints is None:
        return None, [f"joint_{j}" for j in range(layout.joints)], -1, []
    kps = get_keypoint_set(keypoints) if isinstance(keypoints, str) else keypoints
    if len(kps.names) != layout.joints:
        raise ValueError(f"keypoint set {kps.name} has {len(kps.names)} joints, the volume layout {layout.joints}")
    root = kps.root_index
    return kps.name, list(kps.names), -1 if root is None else root, [list(bone) for bone in kps.skeleton]


def volume_context(layout: VolumeLayout, *, input_size: tuple[int, int], keypoints: KeypointSet | str | None = None,
                   resize: str = "stretch", package: str | None = None, root_depth_mm: float | None = None) -> dict:
    """Template values for the volume decoders (values only: the templates format them).

    `input_size` is the model input (height, width) the crop is resized to, `resize` the
    spec's Preprocessing.resize (how the crop box maps onto it), `root_depth_mm` the root
    depth an app assumes when it has none of its own (None: depths stay root-relative).
    """
    if package is not None:
        escape.check_package(package)
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; expected one of {', '.join(RESIZE_MODES)}")
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ValueError(f"the model input size must be positive, got {list(input_size)}")
    set_name, names, root, bones = _keypoints(keypoints, layout)
    if root_depth_mm is not None and not (math.isfinite(root_depth_mm) and root_depth_mm > 0):
        raise ValueError(f"the assumed root depth must be a positive number of mm, got {root_depth_mm!r}")
    return {
        "mdeploy_version": __version__,
        "package": package,
        "generated_package": f"{package}.generated" if package else None,
        "keypoint_set": set_name,
        "joint_names": names,
        "root_joint": root,
        "bones": bones,
        "layout": {
            "joints": layout.joints,
            "depth": layout.depth,
            "height": layout.height,
            "width": layout.width,
            "channels": layout.channels,
            "depth_major": layout.order == "depth_major",
            "order": layout.order,
            "depth_range_mm": float(layout.depth_range_mm),
            "cell_offset": 0.5 if layout.cell_origin == "centre" else 0.0,
            "cell_origin": layout.cell_origin,
        },
        "input": {"height": height, "width": width, "resize": resize},
        "root_depth_mm": None if root_depth_mm is None else float(root_depth_mm),
    }


def render_volume_decoder(platform: str, layout: VolumeLayout, *, package: str | None = None, input_size: tuple[int, int],
                          keypoints: KeypointSet | str | None = None, resize: str = "stretch",
                          root_depth_mm: float | None = None) -> dict[str, str]:
    """Relative path -> source text of the volume decoder for `platform` (android | ios).

    Android files go to `<package>/generated/` (a package is required there), iOS files to
    `Generated/`, beside the rest of the glue. Without a keypoint set the joints are named
    joint_0, joint_1, ... and there is no root or bones.
    """
    env = environment()
    if platform == "android":
        if not package:
            raise ValueError("the Android volume decoder needs a package")
        ctx = volume_context(layout, input_size=input_size, keypoints=keypoints, resize=resize, package=package,
                             root_depth_mm=root_depth_mm)
        folder = ctx["generated_package"].replace(".", "/")
        return {f"{folder}/{ANDROID_FILE}": env.get_template(f"glue/android/{ANDROID_FILE}.j2").render(**ctx)}
    if platform == "ios":
        ctx = volume_context(layout, input_size=input_size, keypoints=keypoints, resize=resize, package=package,
                             root_depth_mm=root_depth_mm)
        return {f"Generated/{IOS_FILE}": env.get_template(f"glue/ios/{IOS_FILE}.j2").render(**ctx)}
    raise ValueError(f"unknown platform {platform!r}")
