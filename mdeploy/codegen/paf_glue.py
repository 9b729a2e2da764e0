"""App glue for multi-person PAF models: a Kotlin and a Swift `PafDecoder` rendered from data.

The generated decoders apply the rules of `mdeploy.evaluate.paf.decode_people` (tf-openpose's
post-processing) step for step, so an app finds the same people the verified model finds in
Python. Everything they need comes from a `PafLayout` (which output channels are heatmaps,
the background, each limb's PAF x/y pair, the limbs and which of them may start a person) and
a `PafSettings` (upsampling, thresholds, samples per limb, minimum parts and score); the
smoother's taps are computed here by the evaluator's own function and emitted as numbers.
"""

from __future__ import annotations

from mdeploy import __version__
from mdeploy.codegen import escape
from mdeploy.codegen.render import environment
from mdeploy.evaluate.paf import PafSettings, smoother_taps
from mdeploy.keypoints import TF_OPENPOSE_COCO18, PafLayout, get_keypoint_set

ANDROID_FILE = "PafDecoder.kt"
IOS_FILE = "PafDecoder.swift"


def paf_context(layout: PafLayout = TF_OPENPOSE_COCO18, settings: PafSettings = PafSettings(), *,
                package: str | None = None) -> dict:
    """Template values for the PAF decoders (values only: the templates format them)."""
    if package is not None:
        escape.check_package(package)
    keypoints = get_keypoint_set(layout.keypoints)
    return {
        "mdeploy_version": __version__,
        "package": package,
        "generated_package": f"{package}.generated" if package else None,
        "keypoints": list(keypoints.names),
        "keypoint_set": keypoints.name,
        "layout": {
            "name": layout.name,
            "parts": layout.parts,
            "heatmaps": layout.heatmaps,
            "pafs": layout.pafs,
            "channels": layout.channels,
            "background": layout.background,
            "stride": layout.stride,
            "new_person_limbs": layout.new_person_limbs,
            "limbs": [list(limb) for limb in layout.limbs],
            "paf_channels": [list(pair) for pair in layout.paf_channels],
        },
        "settings": {
            "upsample": float(settings.upsample),
            "heat": float(settings.heat),
            "vector_score": float(settings.vector_score),
            "vector_count": int(settings.vector_count),
            "samples": int(settings.samples),
            "min_parts": int(settings.min_parts),
            "min_score": float(settings.min_score),
        },
        "smoother_taps": [float(t) for t in smoother_taps(settings.smooth_size, settings.smooth_nsig)],
    }


def render_paf_decoder(platform: str, layout: PafLayout = TF_OPENPOSE_COCO18, settings: PafSettings = PafSettings(), *,
                       package: str | None = None) -> dict[str, str]:
    """Relative path -> source text of the PAF decoder for `platform` (android | ios).

    Android files go to `<package>/generated/` (a package is required there), iOS files to
    `Generated/`, beside the rest of the glue.
    """
    env = environment()
    if platform == "android":
        if not package:
            raise ValueError("the Android PAF decoder needs a package")
        ctx = paf_context(layout, settings, package=package)
        folder = ctx["generated_package"].replace(".", "/")
        return {f"{folder}/{ANDROID_FILE}": env.get_template(f"glue/android/{ANDROID_FILE}.j2").render(**ctx)}
    if platform == "ios":
        ctx = paf_context(layout, settings, package=package)
        return {f"Generated/{IOS_FILE}": env.get_template(f"glue/ios/{IOS_FILE}.j2").render(**ctx)}
    raise ValueError(f"unknown platform {platform!r}")
