"""App glue: Kotlin and Swift sources rendered from templates/ with the ModelSpec.

Everything the app must know to feed the model and read its output comes from the spec
(input size, channel order, value range, mean/std, resize mode, quantization of the
artifact's tensors, output grid, stride, keypoint names and skeleton, decode settings),
so the app cannot feed the model differently from training or decode it differently from
evaluation. The smoothing kernel is computed here, by the same function the evaluator
uses, and emitted as numbers.

What the estimator reads and how it makes people of it is the model family's answer
(`Family.glue_estimator`): the outputs (each with its own quantization), the decoder type
and any template that defines it. Every family's app gets a list of people (a single-person
model: a list of one), and no template names a family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mdeploy import __version__
from mdeploy.codegen import escape
from mdeploy.codegen.render import environment
from mdeploy.evaluate.decode import gaussian_kernel
from mdeploy.families import family_of
from mdeploy.spec import SIGNATURE, ModelSpec

ANDROID_FILES = ("PoseModelConfig.kt", "PoseTypes.kt", "PoseMath.kt", "PoseEstimator.kt")
ANDROID_MACE_FILES = ("MacePoseEstimator.kt",)
IOS_FILES = ("PoseModelConfig.swift", "PoseTypes.swift", "PoseMath.swift", "PoseEstimator.swift")
RESIZE_MODES = {"stretch": "STRETCH", "letterbox": "LETTERBOX", "crop": "CROP"}
VISION_CROP = {"stretch": ".scaleFill", "letterbox": ".scaleFit", "crop": ".centerCrop"}


@dataclass(frozen=True)
class Quant:
    """A tensor's type as the app sees it: float, or 8-bit with scale and zero point."""

    dtype: str = "float32"
    scale: float = 1.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("uint8", "int8")


def tflite_quant(artifact: dict, key: str) -> Quant:
    io = (artifact.get("details") or {}).get("io", {}).get(key)
    if not io:
        return Quant()
    return Quant(io["dtype"], float(io["scale"] or 1.0), int(io["zero_point"] or 0))


def grid(shape) -> tuple[int, int, int]:
    """An output's (height, width, channels) as the app's OutputTensor holds it: NHWC [1, H, W, C]
    as it is; a rank-3 output [1, A, B] (e.g. coordinates [1, joints, 3]) as height 1, width A,
    channels B; [1, C] as one cell of C channels. The product is always the tensor's size."""
    dims = [int(d) for d in shape[1:]]
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"an output of shape {list(shape)} has no NHWC reading: expected rank 2 to 4")
    h, w, c = [1] * (3 - len(dims)) + dims
    return h, w, c


def context(spec: ModelSpec, *, name: str, description: str, package: str | None, model_file: str,
            artifact: dict | None = None, mace: dict | None = None, smoothing_window: int = 3) -> dict:
    """Template values for one app platform (values only: templates format them)."""
    pre = spec.preprocessing
    artifact = artifact or {}
    kernel = [float(v) for v in gaussian_kernel(spec.decode.smooth_sigma)] if spec.decode.smooth_sigma > 0 else [1.0]
    if package is not None:
        escape.check_package(package)
    family = family_of(spec)
    estimator = family.glue_estimator(spec)
    escape.check_identifier(estimator.decoder, "decoder", frozenset())
    tensors = {t.name: t for t in spec.outputs}
    outputs = []
    for output_name in estimator.outputs:
        shape = tuple(int(d) for d in tensors[output_name].shape)
        height, width, channels = grid(shape)
        outputs.append({
            "name": output_name,
            "height": height,
            "width": width,
            "channels": channels,
            "rank": len(shape),  # 4: an NHWC grid; 3: e.g. coordinates [1, joints, 3]
            "shape": list(shape),
            "quant": tflite_quant(artifact, f"output:{output_name}"),
        })
    first = grid(spec.output.shape)
    return {
        "mdeploy_version": __version__,
        "recipe": name,
        "description": description,
        "package": package,
        "generated_package": f"{package}.generated" if package else None,
        "model_file": model_file,
        "model_stem": Path(model_file).stem,
        "input": {
            "name": spec.input.name,
            "height": pre.height,
            "width": pre.width,
            "bgr": pre.channels == "bgr",
            "low": pre.range[0],
            "high": pre.range[1],
            "mean": list(pre.mean),
            "std": list(pre.std),
            "resize": RESIZE_MODES[pre.resize],
            "vision_crop": VISION_CROP[pre.resize],
            "quant": tflite_quant(artifact, f"input:{spec.input.name}"),
        },
        "output": {
            "name": spec.output.name,
            "height": first[0],
            "width": first[1],
            "channels": first[2],
            "stride": spec.output_stride,
            "quant": tflite_quant(artifact, f"output:{spec.output.name}"),
        },
        "outputs": outputs,  # what the estimator reads, in the decoder's order
        "decoder": estimator.decoder,
        "decoder_templates": list(estimator.templates),
        "multi_person": family.multi_person,
        "signature": SIGNATURE,
        "keypoints": list(spec.keypoints.names),
        "keypoint_set": spec.keypoints.name,
        "skeleton": [list(e) for e in spec.keypoints.skeleton],
        "decode": {"kernel": kernel, "subpixel": spec.decode.subpixel, "threshold": family.draw_threshold(spec),
                   "preset": spec.decode.preset},
        "smoothing_window": smoothing_window,
        "mace": mace,
    }


def render_glue(platform: str, ctx: dict) -> dict[str, str]:
    """Relative path -> source text of every generated file for `platform` (android | ios)."""
    env = environment()
    if platform == "android":
        folder = ctx["generated_package"].replace(".", "/")
        names = ANDROID_FILES + tuple(f"{t}.kt" for t in ctx["decoder_templates"])
        names += ANDROID_MACE_FILES if ctx.get("mace") else ()
        return {f"{folder}/{n}": env.get_template(f"glue/android/{n}.j2").render(**ctx) for n in names}
    if platform == "ios":
        names = IOS_FILES + tuple(f"{t}.swift" for t in ctx["decoder_templates"])
        return {f"Generated/{n}": env.get_template(f"glue/ios/{n}.j2").render(**ctx) for n in names}
    raise ValueError(f"unknown platform {platform!r}")
