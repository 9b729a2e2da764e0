"""ModelSpec: the one description of a model's interface that every later stage reads.

Input tensor, preprocessing contract (geometry + value normalization), output tensor,
output stride, keypoint set and decode settings. It is filled from the recipe, checked
against the real model by the model stage, and written to `model/spec.json`. Parity
inputs, calibration, evaluation, CoreML image inputs, MACE input ranges and the
generated app code all derive from it, so a model is fed the same way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.errors import ModelError
from mdeploy.keypoints import KeypointSet, get_keypoint_set

SPEC_VERSION = 1

# The canonical model's interface: whatever a model came from, every export is converted from
# a fixed-batch SavedModel whose serving signature takes `image` and returns `heatmaps`, plus
# the further outputs its family names (a multi-person model adds `pafs`; families/)
# (written by importers/canonical.py; read by runners, exporters and the app glue).
INPUT_NAME = "image"
OUTPUT_NAME = "heatmaps"
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> TensorInfo:
        return cls(data["name"], tuple(data["shape"]), data.get("dtype", "float32"))


@dataclass(frozen=True)
class Affine:
    """Axis-aligned map from source-image coordinates to model-input coordinates.

    Continuous pixel coordinates: pixel i covers [i, i + 1). input = scale * source + offset.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_input(self, x, y):
        return self.scale_x * np.asarray(x) + self.offset_x, self.scale_y * np.asarray(y) + self.offset_y

    def to_source(self, u, v):
        return (np.asarray(u) - self.offset_x) / self.scale_x, (np.asarray(v) - self.offset_y) / self.scale_y


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB uint8 image becomes the model's float input (the contract apps must follow)."""

    size: tuple[int, int]  # (height, width)
    channels: str  # "rgb" | "bgr": order the model expects
    range: tuple[float, float]  # values of pixel 0 and pixel 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "stretch"  # "stretch" | "letterbox" | "crop"

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def geometry(self, src_width: float, src_height: float, box: tuple[float, float, float, float] | None = None) -> Affine:
        """The source -> input map for an image of the given size (or for a box in it), per `resize`."""
        x0, y0, bw, bh = box if box is not None else (0.0, 0.0, float(src_width), float(src_height))
        sx, sy = self.width / bw, self.height / bh
        if self.resize == "stretch":
            return Affine(sx, sy, -sx * x0, -sy * y0)
        s = min(sx, sy) if self.resize == "letterbox" else max(sx, sy)
        return Affine(s, s, (self.width - s * bw) / 2.0 - s * x0, (self.height - s * bh) / 2.0 - s * y0)

    def resize_image(self, rgb: np.ndarray, box: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, Affine]:
        """Warp an RGB uint8 HxWx3 image (or a box of it) to the input size (bilinear; outside is black)."""
        from PIL import Image

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image of shape HxWx3, got {rgb.shape}")
        h, w = rgb.shape[:2]
        aff = self.geometry(w, h, box)
        # PIL's affine transform maps output -> input coordinates.
        data = (1 / aff.scale_x, 0.0, -aff.offset_x / aff.scale_x, 0.0, 1 / aff.scale_y, -aff.offset_y / aff.scale_y)
        img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        out = img.transform((self.width, self.height), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
        return np.asarray(out), aff

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """RGB pixel values (0..255, any float or uint8 array ...x3) -> model input values."""
        x = np.asarray(pixels, dtype=np.float32)
        if self.channels == "bgr":
            x = x[..., ::-1]
        lo, hi = self.range
        x = lo + x * np.float32((hi - lo) / 255.0)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if np.any(mean != 0) or np.any(std != 1):
            x = (x - mean) / std
        return x.astype(np.float32)

    def apply(self, rgb: np.ndarray, box: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, Affine]:
        """RGB uint8 image of any size -> ([H, W, 3] float32 input, source->input map)."""
        resized, aff = self.resize_image(rgb, box)
        return self.normalize(resized), aff

    def input_range(self) -> tuple[float, float]:
        """Smallest and largest value the input can hold (MACE's input_ranges, int8 bounds)."""
        lo, hi = self.range
        mean = np.asarray(self.mean, np.float64)
        std = np.asarray(self.std, np.float64)
        ends = np.stack([(lo - mean) / std, (hi - mean) / std])
        return float(ends.min()), float(ends.max())

    def to_json(self) -> dict:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "range": list(self.range),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        return cls(
            size=tuple(data["size"]),
            channels=data["channels"],
            range=tuple(data["range"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            resize=data["resize"],
        )


@dataclass(frozen=True)
class DecodeSettings:
    smooth_sigma: float = 0.0
    subpixel: bool = True
    threshold: float = 0.2
    preset: str = "mdeploy"  # "mdeploy" or "pefm_android" (evaluate/decode.py)


@dataclass(frozen=True)
class ModelSpec:
    """`output` is the first output (the heatmaps); `extra_outputs` the rest, in the order the
    family lists them. `family` names the family that gives the outputs their meaning
    (mdeploy/families/) and `head` holds that family's section (e.g. a PAF model's channel
    layout and decode constants), written into spec.json for everything downstream."""

    name: str
    input: TensorInfo
    output: TensorInfo
    preprocessing: Preprocessing
    keypoints: KeypointSet
    output_stride: int
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    task: str = "pose_heatmap"
    source: dict = field(default_factory=dict)
    family: str = "heatmap"
    extra_outputs: tuple[TensorInfo, ...] = ()
    head: dict = field(default_factory=dict)

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return (self.output, *self.extra_outputs)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(height, width) of the output grid."""
        return int(self.output.shape[1]), int(self.output.shape[2])

    def to_json(self) -> dict:
        return {
            "spec_version": SPEC_VERSION,
            "name": self.name,
            "task": self.task,
            "family": self.family,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            "extra_outputs": [o.to_json() for o in self.extra_outputs],
            "head": self.head,
            "layout": "NHWC",
            "preprocessing": self.preprocessing.to_json(),
            "output_stride": self.output_stride,
            "keypoints": self.keypoints.to_json(),
            "decode": asdict(self.decode),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict) -> ModelSpec:
        kps = data["keypoints"]
        known = get_keypoint_set(kps["name"])
        if list(known.names) != kps["names"]:
            known = KeypointSet(
                kps["name"],
                tuple(kps["names"]),
                tuple(tuple(e) for e in kps["skeleton"]),
                tuple(tuple(p) for p in kps["flip_pairs"]),
                tuple(kps["head"]) if kps.get("head") else None,
            )
        return cls(
            name=data["name"],
            input=TensorInfo.from_json(data["input"]),
            output=TensorInfo.from_json(data["output"]),
            preprocessing=Preprocessing.from_json(data["preprocessing"]),
            keypoints=known,
            output_stride=int(data["output_stride"]),
            decode=DecodeSettings(**data.get("decode", {})),
            task=data.get("task", "pose_heatmap"),
            source=data.get("source", {}),
            family=data.get("family", "heatmap"),  # specs written before families were single-person heatmaps
            extra_outputs=tuple(TensorInfo.from_json(o) for o in data.get("extra_outputs", [])),
            head=data.get("head", {}),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


SYNTHETIC_ONLY = "trained on synthetic figures only: do not expect it to find real people"


def dims(shape) -> str:
    """A tensor shape for log lines: 1x192x192x3 (no brackets inside the `[i/n] stage:` tag's line)."""
    return "x".join(str(d) for d in shape)


def provenance(source: dict) -> dict:
    """What a model was trained on, from its spec's `source`: the splits a build trained it on
    (kind, size, fingerprint), or, for an imported model, what its authors state (else unknown).

    `summary` is one line for tables and headers; `note` is the plain-words warning that
    reports, `predict` and `eval` print when a model has seen only synthetic figures.
    """
    trained = source.get("trained_on") or {}
    start = source.get("initialised_from")
    if trained.get("known"):
        splits = trained.get("splits") or []
        kinds = sorted({s.get("kind", "unknown") for s in splits})
        parts = [f"{s['name']}: {s.get('kind', 'unknown')}, {s.get('people', '?')} people" for s in splits]
        summary = "trained here on " + "; ".join(parts) if parts else "trained here"
        if start:
            summary += f", starting from {start.get('file', 'release weights')}"
        note = SYNTHETIC_ONLY if kinds == ["synthetic"] and not start else None
        return {"known": True, "splits": splits, "kinds": kinds, "summary": summary, "note": note}
    stated = trained.get("stated")
    summary = f"imported; its authors state: {stated}" if stated else "imported: its training data is unknown"
    return {"known": False, "stated": stated, "summary": summary, "note": None}


def make_spec(recipe, size: tuple[int, int], out_shapes, source: dict, where: Callable[..., str | None]) -> ModelSpec:
    """The ModelSpec of the canonical model, after its family checked the outputs against the recipe.

    `out_shapes` maps each canonical output name to its shape (a bare shape: the heatmaps)."""
    from mdeploy.families import get_family, recipe_family

    family = get_family(recipe_family(recipe))
    head = family.head(recipe)
    if not isinstance(out_shapes, dict):
        out_shapes = {OUTPUT_NAME: tuple(out_shapes)}
    names = family.output_names(head)
    missing = [n for n in names if n not in out_shapes]
    if missing:
        raise ModelError(
            f"a {family.description} model has the outputs {', '.join(names)}; this one gives {', '.join(out_shapes)}",
            where=where("model", "family") or where("model"),
        )
    shapes = {n: tuple(int(d) for d in out_shapes[n]) for n in names}
    stride = family.check_outputs(recipe, size, shapes, where)
    height, width = size
    decode = recipe.model.decode
    outputs = [TensorInfo(n, shapes[n]) for n in names]
    return ModelSpec(
        name=recipe.name,
        input=TensorInfo(INPUT_NAME, (1, height, width, 3)),
        output=outputs[0],
        preprocessing=preprocessing_from_recipe(recipe.model.input, size),
        keypoints=get_keypoint_set(recipe.model.keypoints),
        output_stride=stride,
        decode=DecodeSettings(decode.smooth_sigma, decode.subpixel, decode.threshold, decode.preset),
        task=f"pose_{family.name}",
        source=source,
        family=family.name,
        extra_outputs=tuple(outputs[1:]),
        head=head,
    )


def planned_spec(recipe) -> ModelSpec:
    """The ModelSpec a recipe's registered architecture will have once trained, without training it.

    Scaffolding an app needs the model's interface before any build: for `model.arch` it is
    fixed by the architecture and the recipe (an imported model must be built to be known).
    """
    from mdeploy.models import get_arch

    if recipe.model.arch is None:
        raise ModelError(
            "an imported model's interface is known only once it is built",
            where=recipe.where("model", "import", key=True),
            hint=f"run `mdeploy build` on this recipe first; its build folder ({recipe.name}/) then supplies the spec",
        )
    from mdeploy.families import get_family, recipe_family

    info = get_arch(recipe.model.arch)
    height, width = recipe.model.input.size or info.input_size
    stride = info.output_stride
    family = get_family(recipe_family(recipe))
    grid = (1, height // stride, width // stride)
    channels = family.planned_channels(recipe, len(get_keypoint_set(recipe.model.keypoints)))
    source = {"format": "planned", "arch": recipe.model.arch, "params": info.params(recipe.model.params)}
    return make_spec(recipe, (height, width), {n: (*grid, c) for n, c in channels.items()}, source, recipe.where)


def preprocessing_from_recipe(section: Any, size: tuple[int, int]) -> Preprocessing:
    """Build the contract from a recipe's `model.input` (size given separately: it may come from the model)."""
    return Preprocessing(
        size=(int(size[0]), int(size[1])),
        channels=section.channels,
        range=(float(section.range[0]), float(section.range[1])),
        mean=tuple(float(v) for v in section.mean),
        std=tuple(float(v) for v in section.std),
        resize=section.resize,
    )
