"""The recipe schema: typed, strict (unknown keys rejected), frozen after validation.

Every section a recipe may hold is declared and validated here, including those whose
stages arrive later; `mdeploy.pipeline` says which sections a build acts on, and the
CLI reports the rest instead of ignoring them. `mdeploy schema` prints the JSON Schema
generated from these classes.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SerializationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mdeploy.keypoints import KEYPOINT_SETS
from mdeploy.registry import unknown_name_message

# ---------------------------------------------------------------------------- value types


def _resolve_path(value: Any) -> Any:
    """Relative paths resolve against the folder of the file that wrote them."""
    if isinstance(value, str):
        if not value.strip():
            raise PydanticCustomError("empty_path", "expected a path, got an empty string")
        origin = getattr(value, "origin", None) or Path.cwd()
        return Path(os.path.normpath(os.path.join(origin, os.path.expanduser(value))))
    return value


def _serialize_path(value: Path, info: SerializationInfo) -> str:
    root = (info.context or {}).get("root") if info.context else None
    if root is not None:
        try:
            return Path(os.path.relpath(value, root)).as_posix()
        except ValueError:
            pass
    return str(value)


def _one_or_more(value: Any) -> Any:
    """One item where a list is expected: a list of that one item."""
    return value if isinstance(value, (list, tuple)) else [value]


RecipePath = Annotated[
    Path,
    BeforeValidator(_resolve_path),
    PlainSerializer(_serialize_path, return_type=str),
    Field(json_schema_extra={"format": "path"}),
]

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value) or len(value) > 64:  # fullmatch: `$` would accept a trailing newline
        raise PydanticCustomError(
            "slug",
            "expected a slug (letters, digits, '-' and '_', starting with a letter or digit, at most 64), got {value}",
            {"value": repr(str(value))},
        )
    return value


Slug = Annotated[str, AfterValidator(_slug)]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(value: str) -> str:
    value = value.lower()
    if not _SHA256.fullmatch(value):
        raise PydanticCustomError("sha256", "expected 64 hexadecimal digits (a sha256 checksum)")
    return value


def _sha256_text(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise PydanticCustomError("sha256_number", "YAML read this checksum as a number: put it in quotes")
    return value


Sha256 = Annotated[str, BeforeValidator(_sha256_text), AfterValidator(_sha256)]


def _keypoint_set(value: str) -> str:
    if value not in KEYPOINT_SETS:
        raise PydanticCustomError("unknown_name", unknown_name_message("keypoint set", value, KEYPOINT_SETS.names()))
    return value


KeypointSetName = Annotated[str, AfterValidator(_keypoint_set)]

TFLITE_VARIANTS = ("fp32", "fp16", "dynamic", "int8")
ARTIFACT_IDS = tuple(f"tflite/{v}" for v in TFLITE_VARIANTS) + ("onnx", "coreml", "coreml/neuralnetwork", "mace")


def _artifact_id(value: str) -> str:
    if value not in ARTIFACT_IDS:
        raise PydanticCustomError("unknown_name", unknown_name_message("artifact", value, ARTIFACT_IDS))
    return value


ArtifactId = Annotated[str, AfterValidator(_artifact_id)]


def _arch(value: str) -> str:
    from mdeploy.models import MODELS

    if value not in MODELS:
        raise PydanticCustomError("unknown_name", unknown_name_message("architecture", value, MODELS.names()))
    return value


ArchName = Annotated[str, AfterValidator(_arch)]

NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]

# Upper bounds: a number far past any real use is a typo (epochs 1e23), refused before it
# becomes a loop, an allocation or an overflow. Every float must be finite (Section).
InputDim = Annotated[int, Field(gt=0, le=4096)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
SEED_HELP = "0 to 4294967295"
Steps = Annotated[int, Field(gt=0, le=1_000_000_000)]
PixelValue = Annotated[float, Field(ge=-65536, le=65536)]
Percent = Annotated[float, Field(ge=0, le=100)]
Spread = Annotated[float, Field(gt=0, le=65536)]


class Section(BaseModel):
    """Base of every recipe mapping: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=False, validate_default=True, allow_inf_nan=False
    )


# ---------------------------------------------------------------------------- model


class InputSection(Section):
    """The preprocessing contract: how a camera frame becomes the model's input tensor."""

    size: tuple[InputDim, InputDim] | None = Field(
        None, description="[height, width] of the model input, 1 to 4096 each; read from the model when omitted for imports"
    )
    channels: Literal["rgb", "bgr"] = Field(description="channel order the model expects")
    range: tuple[PixelValue, PixelValue] = Field(
        description="values that pixel 0 and pixel 255 map to, e.g. [0, 255] or [-1, 1] (each within -65536 to 65536)"
    )
    mean: tuple[PixelValue, PixelValue, PixelValue] = Field(
        (0.0, 0.0, 0.0), description="subtracted after scaling to range (each within -65536 to 65536)"
    )
    std: tuple[Spread, Spread, Spread] = Field(
        (1.0, 1.0, 1.0), description="divides after mean (each above 0, at most 65536)"
    )
    resize: Literal["stretch", "letterbox", "crop"] = Field(
        "stretch", description="stretch to size, letterbox (keep aspect, pad), or crop (keep aspect, centre crop)"
    )

    @field_validator("range")
    @classmethod
    def _range_order(cls, value):
        if value[0] >= value[1]:
            raise PydanticCustomError("range_order", "expected [low, high] with low < high, got {r}", {"r": [value[0], value[1]]})
        return value


class DecodeSection(Section):
    """How heatmaps become keypoints (the evaluator and the generated app code share it)."""

    smooth_sigma: Annotated[float, Field(ge=0, le=64)] = Field(
        0.0, description="Gaussian blur sigma (heatmap cells) before argmax, 0 to 64; 0 = off"
    )
    subpixel: bool = Field(True, description="refine the argmax by a quarter cell toward the higher neighbour")
    threshold: Fraction = Field(0.2, description="confidence under which a keypoint is not drawn")
    preset: Literal["mdeploy", "pefm_android"] = Field(
        "mdeploy",
        description="mdeploy: smooth_sigma, argmax, subpixel, cell centres; pefm_android: the PoseEstimationForMobile "
        "Android demo's rules (5x5 blur, local maximum >= 0.01, cell corners; smooth_sigma and subpixel unused)",
    )


class PafSection(Section):
    """A multi-person PAF model's channel layout and tf-openpose's decode constants (family `paf`)."""

    layout: str = Field("tf_openpose_coco18", description="which output channels are heatmaps, background and PAF x/y pairs "
                        "per limb (registered layouts: tf_openpose_coco18)")
    upsample: Annotated[float, Field(gt=0, le=16)] = Field(4.0, description="heatmaps and PAFs are resized up by this factor")
    heat: Fraction = Field(0.05, description="a part peak's smoothed heatmap value must exceed this")
    vector_score: Fraction = Field(0.05, description="a PAF sample along a candidate limb agrees above this")
    vector_count: Annotated[int, Field(ge=0, le=100)] = Field(8, description="more than this many samples must agree")
    samples: Annotated[int, Field(ge=1, le=100)] = Field(10, description="PAF samples per candidate limb")
    min_parts: Annotated[int, Field(ge=1, le=100)] = Field(4, description="a person needs at least this many parts")
    min_score: Annotated[float, Field(ge=0, le=10)] = Field(0.4, description="a person's mean score must reach this")

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        from mdeploy.families.paf import LAYOUTS

        if value not in LAYOUTS:
            raise PydanticCustomError("unknown_name", unknown_name_message("PAF layout", value, LAYOUTS.names()))
        return value

    def settings(self) -> dict:
        """The decode constants, as `PafSettings` takes them."""
        return {k: getattr(self, k) for k in ("upsample", "heat", "vector_score", "vector_count", "samples", "min_parts", "min_score")}


class VolumeSection(Section):
    """A 3-D volumetric model's output layout, decode and run-time needs (family `volumetric`,
    MobileHumanPose: one volume of depth bins x grid cells per joint; mdeploy/families/volumetric.py)."""

    depth_bins: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="depth bins per joint (D); default: the architecture's, 32 (MobileHumanPose) for imports"
    )
    order: Literal["joint_major", "depth_major"] = Field(
        "joint_major", description="which channel holds joint j's depth bin d: joint_major j*D + d (a PyTorch export "
        "transposed), depth_major d*J + j"
    )
    depth_range_mm: Annotated[float, Field(gt=0, le=100_000)] = Field(
        2000.0, description="the volume spans +-depth_range/2 mm around the root joint (MobileHumanPose: 2000)"
    )
    cell_origin: Literal["centre", "corner"] = Field(
        "centre", description="centre: cell i is input pixel (i + 0.5) x stride; corner: i x stride (the repository's targets)"
    )
    in_graph_softargmax: bool | None = Field(
        None, description="the model ends in the soft-argmax (output `coords` [1, J, 3]) instead of the raw volume "
        "(`volume` [1, H, W, J*D]); default: the architecture's soft_argmax parameter, false for imports"
    )
    stride: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="input pixels per volume cell; needed for an imported model that ends in the soft-argmax "
        "(its output has no grid to read it from); default: the architecture's, read from the volume for imports"
    )
    root_depth: Literal["given", "constant"] = Field(
        "given", description="where the root joint's absolute depth comes from at run time: given by the app (ground "
        "truth, or a root-depth estimate) or a constant (root_depth_mm)"
    )
    root_depth_mm: Annotated[float, Field(gt=0, le=1_000_000)] | None = Field(
        None, description="with root_depth: constant, the root's assumed distance from the camera (mm)"
    )
    parity_mm: Annotated[float, Field(gt=0, le=1000)] = Field(
        10.0, description="parity: a joint agrees when the artifact puts it within this many mm of the canonical model"
    )

    @model_validator(mode="after")
    def _root_depth(self):
        if self.root_depth == "constant" and self.root_depth_mm is None:
            raise PydanticCustomError("root_depth_mm", "root_depth: constant needs root_depth_mm (the assumed distance, mm)",
                                      {"at": "root_depth_mm"})
        if self.root_depth == "given" and self.root_depth_mm is not None:
            raise PydanticCustomError("root_depth_mm", "root_depth_mm applies to root_depth: constant (the app gives it otherwise)",
                                      {"at": "root_depth_mm"})
        return self


FAMILY_NAMES = ("heatmap", "paf", "volumetric")


class _FileSource(Section):
    """A model file given by local path, or by url + sha256 (downloaded once into the cache)."""

    path: RecipePath | None = Field(None, description="local model file or folder")
    url: str | None = Field(None, description="http(s) address; needs sha256, downloaded once into the cache")
    sha256: Sha256 | None = Field(None, description="checksum the file must have (required with url)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.url is None):
            raise PydanticCustomError("import_source", "give exactly one of 'path' or 'url'")
        if self.url is not None:
            if not re.match(r"^(https?|file)://", self.url):
                raise PydanticCustomError("url", "expected an address starting with http://, https:// or file://", {"at": "url"})
            if self.sha256 is None:
                raise PydanticCustomError("url_sha", "a file from a url needs 'sha256' to verify the download", {"at": "url"})
        return self


class _ImportSource(_FileSource):
    inputs: list[str] | None = Field(None, description="input tensor names (one)")
    outputs: list[str] | None = Field(None, description="output tensor names (one: the final heatmaps)")
    trained_on: str | None = Field(
        None, description="what the model was trained on, as its authors state it (recorded in the spec and shown in reports)"
    )

    @model_validator(mode="after")
    def _one_name(self):
        for key in ("inputs", "outputs"):
            names = getattr(self, key)
            if names is not None and len(names) != 1:
                raise PydanticCustomError(
                    "io_count",
                    "mdeploy builds single-input, single-output heatmap models: expected 1 name, got {n}",
                    {"at": key, "n": len(names)},
                )
        return self


class KerasImport(_ImportSource):
    """A Keras 3 `.keras` file; `outputs` picks one output when the model has several."""

    format: Literal["keras"]


class SavedModelImport(_ImportSource):
    """A TensorFlow SavedModel folder; `inputs`/`outputs` name keys of the signature."""

    format: Literal["saved_model"]
    signature: str = Field("serving_default", description="signature to import")


class FrozenPbImport(_ImportSource):
    """A TF1 frozen GraphDef (.pb) with named input and output tensors."""

    format: Literal["frozen_pb"]

    @model_validator(mode="after")
    def _names_required(self):
        for key in ("inputs", "outputs"):
            if getattr(self, key) is None:
                raise PydanticCustomError(
                    "frozen_names", "a frozen_pb import needs '{key}': the graph's tensor names", {"key": key}
                )
        return self


class OnnxImport(_ImportSource):
    """An ONNX model (NCHW, e.g. from PyTorch), converted by onnx2tf (installed apart: requirements-onnx2tf.txt)."""

    format: Literal["onnx"]


class TfliteImport(_ImportSource):
    """A .tflite model: verified, packaged (as export tflite/fp32), glued and benchmarked, never re-converted.
    `inputs`/`outputs` name its tensors; needed only when it has several."""

    format: Literal["tflite"]


ImportSection = Annotated[
    Union[KerasImport, SavedModelImport, FrozenPbImport, OnnxImport, TfliteImport], Field(discriminator="format")
]


class InitSection(_FileSource):
    """Start `model.arch` from released weights (a TF1 frozen graph of the same architecture)."""

    format: Literal["frozen_pb"] = Field("frozen_pb", description="what the release is: a TF1 frozen graph")
    output: str | None = Field(None, description="the graph node of the final heatmaps (default: the graph's one output)")


class ModelSection(Section):
    arch: ArchName | None = Field(None, description="a registered architecture to train (see `mdeploy models`)")
    params: dict[str, Any] = Field(default_factory=dict, description="architecture parameters, e.g. {width: 0.5}")
    import_: ImportSection | None = Field(None, alias="import", description="import an existing model instead")
    input: InputSection
    keypoints: KeypointSetName = Field("aic14", description="keypoint set of the output channels")
    decode: DecodeSection = Field(default_factory=DecodeSection)
    init: InitSection | None = Field(None, description="start model.arch from released weights instead of random ones")
    family: Literal[FAMILY_NAMES] | None = Field(
        None, description="what the outputs mean: heatmap (single person), paf (multi-person heatmaps + part affinity "
        "fields) or volumetric (3-D: a volume per joint); default: the architecture's, heatmap for imports"
    )
    paf: PafSection | None = Field(None, description="family paf: channel layout and decode constants")
    volume: VolumeSection | None = Field(None, description="family volumetric: volume layout, decode and run-time needs")

    def _fill(self, key: str, value) -> None:
        """Set a default the validator derives (the section is frozen once validated)."""
        object.__setattr__(self, key, value)

    @model_validator(mode="after")
    def _family_section(self):
        family = self.family
        if family is None and self.arch is not None:
            from mdeploy.models import MODELS

            if self.arch in MODELS:
                family = MODELS.get(self.arch).output_family
        if family == "paf" and self.paf is None:
            self._fill("paf", PafSection())
        if self.paf is not None and family not in (None, "paf"):
            raise PydanticCustomError("family_section", "'paf' settings apply to family paf, not {f}", {"f": family, "at": "paf"})
        if self.paf is not None and family is None:
            self._fill("family", "paf")
            family = "paf"
        if family == "volumetric" and self.volume is None:
            self._fill("volume", VolumeSection())
        if self.volume is not None and family not in (None, "volumetric"):
            raise PydanticCustomError("family_section", "'volume' settings apply to family volumetric, not {f}",
                                      {"f": family, "at": "volume"})
        if self.volume is not None and family is None:
            self._fill("family", "volumetric")
        if self.volume is not None and self.import_ is not None and self.volume.in_graph_softargmax and self.volume.stride is None:
            raise PydanticCustomError(
                "volume_stride", "an imported model that ends in the soft-argmax needs volume.stride (input pixels per cell; "
                "MobileHumanPose: 8): its [1, J, 3] output has no grid to read it from", {"at": "volume"})
        return self

    @model_validator(mode="after")
    def _arch_or_import(self):
        if (self.arch is None) == (self.import_ is None):
            raise PydanticCustomError("arch_or_import", "give exactly one of 'arch' (train a model) or 'import'")
        if self.init is not None and self.arch is None:
            raise PydanticCustomError("init_import", "'init' starts a model.arch from released weights; an import has its own", {"at": "init"})
        if self.import_ is not None and self.params:
            raise PydanticCustomError("params_import", "'params' applies to 'arch' models, not to imports", {"at": "params"})
        if self.arch is not None and self.input.size is None:
            raise PydanticCustomError("size_required", "input.size is required when training an 'arch' model", {"at": "input"})
        if self.arch is not None:
            from mdeploy.errors import InputError
            from mdeploy.models import get_arch

            info = get_arch(self.arch)
            try:
                info.params(self.params)
            except InputError as err:
                raise PydanticCustomError("arch_params", err.message, {"at": "params"}) from None
            for key, value in self.params.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise PydanticCustomError(
                        "finite_number", "parameter {k} must be a finite number, got {v}", {"k": key, "v": value, "at": "params"}
                    )
            multiple = info.size_multiple
            if any(v % multiple for v in self.input.size):
                raise PydanticCustomError(
                    "arch_size",
                    "{arch} needs an input size divisible by {m}, got {size}",
                    {"arch": self.arch, "m": multiple, "size": list(self.input.size), "at": "input"},
                )
        return self


# ---------------------------------------------------------------------------- data, train


class SyntheticData(Section):
    count: Annotated[int, Field(gt=0, le=1_000_000)] = Field(description="number of images to generate (1 to 1000000)")
    seed: Seed = Field(0, description=f"generator seed ({SEED_HELP}): same seed, same images and labels")
    size: Annotated[int, Field(ge=32, le=1024)] = Field(192, description="image width and height in pixels")
    people: tuple[Annotated[int, Field(ge=1, le=8)], Annotated[int, Field(ge=1, le=8)]] | None = Field(
        None, description="scenes of several overlapping figures, [fewest, most] per image (multi-person models; "
        "labelled in COCO-18, images at least 64 px); default: one figure per image"
    )
    keypoints3d: Literal["h36m17", "muco21"] | None = Field(
        None, description="3-D people instead (family volumetric): posed skeletons seen by random cameras "
        "(data/synthetic3d.py), labelled in this keypoint set with 3-D joints (mm) and each image's camera"
    )

    @model_validator(mode="after")
    def _scene(self):
        if self.keypoints3d is not None and self.people is not None:
            raise PydanticCustomError("scene_3d", "3-D people (keypoints3d) are one per image: leave out people", {"at": "people"})
        if self.people is not None:
            if self.people[0] > self.people[1]:
                raise PydanticCustomError("people_order", "people is [fewest, most]: got {p}", {"p": list(self.people), "at": "people"})
            if self.size < 64:
                raise PydanticCustomError("scene_size", "scenes of several people need size >= 64, got {s}", {"s": self.size, "at": "size"})
        return self


class CocoData(Section):
    annotations: RecipePath = Field(description="COCO-keypoints json (keypoints mapped by name from categories[].keypoints)")
    images: RecipePath = Field(description="folder holding the images the json names")


class MpiiData(Section):
    annotations: RecipePath = Field(description="MPII json (HRNet/mmpose layout: image, joints, joints_vis, center, scale)")
    images: RecipePath = Field(description="folder holding the images the json names")


class Coco3dData(Section):
    """3-D people: a COCO-keypoints json whose annotations add `keypoints_3d` (camera space, mm, or m with
    info.units) and whose images carry their camera ({f: [fx, fy], c: [cx, cy]}), as mdeploy's synthetic 3-D
    people and MuCo are written (mdeploy/data/h36m.py)."""

    annotations: RecipePath = Field(description="COCO-keypoints json with keypoints_3d per person and a camera per image")
    images: RecipePath = Field(description="folder holding the images the json names")


class H36mData(Section):
    """Human3.6M as mmpose ships its samples: h36m_coco.json (world-space joints, Human3.6M's fixed joint order),
    cameras.pkl beside it, images under <subject>/<subject>_<action>.<camera>/."""

    annotations: RecipePath = Field(description="h36m_coco.json")
    images: RecipePath = Field(description="the folder the subject folders are in")
    cameras: RecipePath | None = Field(None, description="the camera table (default: cameras.pkl beside the annotations)")


class ImagesData(Section):
    """Unlabelled images (data.calibration only): each whole image through the model's preprocessing,
    as an app feeds a camera frame, for int8 calibration and int8 fine-tuning."""

    folders: Annotated[list[RecipePath], BeforeValidator(_one_or_more), Field(min_length=1)] = Field(
        description="a folder of images, or a list of folders (.jpg, .jpeg, .png, .bmp, .webp)"
    )
    recursive: bool = Field(False, description="also read the images in the folders' subfolders")


SPLIT_SOURCES = ("synthetic", "coco", "mpii", "coco3d", "h36m", "images")


class DataSplit(Section):
    synthetic: SyntheticData | None = None
    coco: CocoData | None = None
    mpii: MpiiData | None = None
    coco3d: Coco3dData | None = Field(None, description="3-D people with cameras (family volumetric)")
    h36m: H36mData | None = Field(None, description="Human3.6M frames with cameras (family volumetric)")
    images: ImagesData | None = Field(None, description="unlabelled whole images: data.calibration only")
    name: Slug | None = Field(None, description="the split's name in tables and gates (default: train / val)")
    kind: Literal["synthetic", "real", "unknown"] | None = Field(
        None, description="what the images are: synthetic figures, real photos, or unknown (default: synthetic for generated data, else unknown)"
    )
    crop: Literal["auto", "image", "person"] = Field(
        "auto", description="feed whole images or crops around each person (auto: whole images when each holds one person)"
    )
    optional: bool = Field(
        False, description="validation splits: skip this split, with a notice, where its annotations file is absent"
    )

    @property
    def absent(self) -> bool:
        """An optional split whose files are not on this machine."""
        if not self.optional or self.synthetic is not None:
            return False
        if self.images is not None:
            return not all(Path(f).is_dir() for f in self.images.folders)
        return not Path(getattr(self, self.source).annotations).is_file()

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in SPLIT_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError("data_source", "give exactly one of 'synthetic', 'coco', 'mpii', 'coco3d', 'h36m' or 'images'")
        if self.images is not None and self.crop == "person":
            raise PydanticCustomError("images_crop", "unlabelled images have no people to crop around: crop image or auto",
                                      {"at": "crop"})
        if self.synthetic is not None and self.kind not in (None, "synthetic"):
            raise PydanticCustomError("split_kind", "generated figures are synthetic, not {kind}", {"kind": self.kind, "at": "kind"})
        return self

    @property
    def source(self) -> str:
        return next(k for k in SPLIT_SOURCES if getattr(self, k) is not None)

    @property
    def kind_of(self) -> str:
        return "synthetic" if self.synthetic is not None else (self.kind or "unknown")


class DataSection(Section):
    train: DataSplit | None = None
    calibration: DataSplit | None = Field(None, description="images only for int8 calibration (default: data.train)")
    val: DataSplit | list[DataSplit] | None = Field(
        None, description="one validation split, or several (each scored and gated on its own; give each a name)"
    )

    @model_validator(mode="after")
    def _val_names(self):
        if isinstance(self.val, list):
            if not self.val:
                raise PydanticCustomError("val_empty", "data.val lists no split", {"at": "val"})
            if len(self.val) > 1:
                unnamed = [i for i, v in enumerate(self.val) if v.name is None]
                if unnamed:
                    raise PydanticCustomError(
                        "val_name", "several validation splits need a name each (split {i} has none)", {"i": unnamed[0], "at": "val"}
                    )
            names = [v.name or "val" for v in self.val]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise PydanticCustomError("val_dupes", "validation split name used twice: {d}", {"d": ", ".join(dupes), "at": "val"})
        splits = self.val if isinstance(self.val, list) else [self.val] if self.val else []
        listed = isinstance(self.val, list)
        labelled = [("train", "train", self.train)] + [(f"val.{i}" if listed else "val", f"val[{i}]" if listed else "val", v)
                                                      for i, v in enumerate(splits)]
        for at, label, split in labelled:
            if split is not None and split.images is not None:
                raise PydanticCustomError(
                    "images_unlabelled", "unlabelled images can only calibrate int8 (data.calibration); "
                    "data.{split} needs labelled people (synthetic, coco, mpii, coco3d or h36m)", {"split": label, "at": f"{at}.images"}
                )
        if any(v.name == "train" for v in splits):
            raise PydanticCustomError("val_train", "a validation split cannot be named 'train'", {"at": "val"})
        return self

    def val_splits(self, *, absent: bool = False) -> list[tuple[str, DataSplit, tuple]]:
        """(name, split, key path in the recipe) of every validation split, in recipe order;
        optional splits whose files are missing here only with `absent`."""
        if self.val is None:
            return []
        if isinstance(self.val, list):
            splits = [(v.name or "val", v, ("data", "val", i)) for i, v in enumerate(self.val)]
        else:
            splits = [(self.val.name or "val", self.val, ("data", "val"))]
        return [s for s in splits if absent or not s[1].absent]


class OptimizerSection(Section):
    name: Literal["adam", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0, le=10)] = Field(1.0e-3, description="learning rate (above 0, at most 10)")
    decay: Annotated[float, Field(gt=0, le=1)] = Field(0.95, description="exponential decay factor")
    decay_steps: Steps = Field(10000, description="steps per decay (1 to 1000000000)")


class EarlyStopSection(Section):
    patience: Annotated[int, Field(gt=0, le=10_000)] = Field(3, description="evaluations without improvement before stopping (1 to 10000)")
    min_delta: NonNegativeFloat = Field(0.0, description="smallest change that counts as an improvement (finite, 0 or more)")


class TrainSection(Section):
    epochs: Annotated[int, Field(gt=0, le=10_000)] = Field(10, description="passes over data.train (1 to 10000)")
    batch_size: Annotated[int, Field(gt=0, le=4096)] = Field(16, description="images per step (1 to 4096)")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    seed: Seed = Field(0, description=f"seed of weights, shuffling and augmentation ({SEED_HELP})")
    checkpoint_every: Steps = Field(500, description="steps between checkpoints (1 to 1000000000)")
    early_stop: EarlyStopSection | None = None
    max_steps: Steps | None = Field(
        None, description="stop after this many steps (smoke runs), 1 to 1000000000; default: all epochs"
    )
    freeze_batchnorm: bool = Field(
        False, description="keep batch norm statistics and offsets as they are (fine-tuning released weights on little data)"
    )
    foreground_weight: Annotated[float, Field(ge=1, le=1000)] = Field(
        1.0,
        description="L2 weight of heatmap pixels (1 to 1000): 1 + (w - 1) x target; 1 is the plain L2 of the reference; "
        "10 escapes the all-zero plateau in hundreds of steps instead of thousands",
    )


# ---------------------------------------------------------------------------- export


def _not_val(value: Any) -> Any:
    if value == "val":
        raise PydanticCustomError(
            "calibration_val",
            "calibrating on data.val would score the int8 variant on the images it was calibrated on: "
            "use data.train or a data.calibration split",
        )
    return value


MIN_CALIBRATION = 100  # fewer calibration images than this are flagged as not representative


class CalibrationSection(Section):
    """What full-integer quantization calibrates on: the recipe's data (never a validation split) and photos."""

    split: Annotated[Literal["train", "calibration"] | None, BeforeValidator(_not_val)] = Field(
        None, description="data.train or data.calibration (default: data.calibration when the recipe has one, else data.train)"
    )
    photos: bool = Field(True, description="add the photos of people verification uses (package photos, verify.samples.images)")
    samples: Annotated[int, Field(gt=0, le=100_000)] = Field(200, description="calibration images (1 to 100000)")


class MixedPrecision(Section):
    """Keep the layers that cost an int8 variant its accuracy in float, until verify.accuracy passes."""

    enabled: Literal["auto"] | bool = Field(
        "auto", description="auto: search when the int8 variant fails verify.accuracy on a data.val split the recipe has "
                            "(nothing to search without them); true: the same, and a recipe without them is an error; "
                            "false: never (a failing int8 variant stays plain int8)"
    )
    max_float_layers: Annotated[int, Field(gt=0, le=1000)] = Field(16, description="most layers kept in float (1 to 1000)")


class Int8Finetune(Section):
    """Quantization-aware fine-tuning of the int8 variant against the float model's own outputs
    on the calibration images (exporters/int8_finetune.py)."""

    steps: Annotated[int, Field(ge=0, le=100_000)] = Field(
        0, description="training steps (0: off; 300 took 2-3 minutes for the PEFM CPM on 2 CPU cores)"
    )
    learning_rate: Annotated[float, Field(gt=0, le=0.1)] = Field(1e-5, description="Adam's learning rate")
    batch: Annotated[int, Field(gt=0, le=256)] = Field(8, description="images per step")


class TfliteExport(Section):
    variants: list[Literal["fp32", "fp16", "dynamic", "int8"]] = Field(
        default_factory=lambda: ["fp32"], min_length=1, description="fp32, fp16 (weights), dynamic (int8 weights), int8"
    )
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
    mixed_precision: MixedPrecision = Field(
        default_factory=MixedPrecision,
        description="when int8 loses more than verify.accuracy allows, keep the costliest layers in float (needs data.val)",
    )
    int8_io: Literal["float", "uint8", "int8"] = Field("float", description="input/output type of the int8 variant")
    split_depthwise: bool = Field(
        True, description="split depthwise kernels of more than 25 taps (7x7) into bands XNNPACK runs on its fast path "
                          "(exact up to float rounding; TFLite artifacts only)"
    )
    int8_prelu: Literal["leaky_relu", "keep"] = Field(
        "leaky_relu", description="int8 variant: PReLU as w1*x + w2*LeakyReLU(x), which XNNPACK runs in int8 (it runs PRELU "
                                  "in float only); keep: leave PRELU to TFLite's builtin kernels"
    )
    int8_equalize: bool = Field(
        False, description="int8 variant: rescale the channels of each convolution -> ReLU -> convolution pair across "
                           "the ReLU, sqrt(activation range / weight range) per channel measured on the calibration images, "
                           "so that one int8 scale serves all of a tensor's channels (exact in float; off by default: "
                           "docs/benchmarks.md)"
    )
    int8_finetune: Int8Finetune = Field(
        default_factory=Int8Finetune,
        description="int8 variant: train the weights (batch norms folded) so that int8-rounded outputs match the float "
                    "model's on the calibration images, randomly zoomed, shifted and mirrored; no labels (off by default)",
    )
    int8_concat: Literal["auto", "scale", "split", "keep"] = Field(
        "auto", description="int8 variant: an int8 concatenation forces one scale on all its inputs. scale: a faint part "
                            "of a channel concatenation read only by convolutions is multiplied up to share the "
                            "concatenation's range (measured on the calibration images) and the reading convolutions' "
                            "weights divided back; split: each such concatenation becomes one convolution per part, summed, "
                            "so each part keeps its own scale (more ops); auto: scale where Conv2D layers read the "
                            "concatenation directly, split where per-channel ops (a depthwise layer) come first; keep: "
                            "leave the concatenations"
    )

    @model_validator(mode="after")
    def _unique(self):
        dupes = sorted({v for v in self.variants if self.variants.count(v) > 1})
        if dupes:
            raise PydanticCustomError("dupes", "variant listed twice: {d}", {"d": ", ".join(dupes), "at": "variants"})
        return self


class CoremlExport(Section):
    """An ML Program `.mlpackage` (and with `neuralnetwork: true` also an `.mlmodel` for iOS 13-14)."""

    precision: Literal["fp16", "fp32"] = Field("fp16", description="compute precision of the ML Program")
    minimum_deployment_target: Literal["iOS15", "iOS16", "iOS17", "iOS18"] = "iOS16"
    quantize: Literal["none", "int8", "palettize4", "palettize6", "palettize8"] = Field(
        "none", description="weight compression: int8 linear, or k-means palettes of 4/6/8 bits (iOS16+)"
    )
    neuralnetwork: bool = Field(False, description="also write a neuralnetwork .mlmodel (iOS 13+)")

    @model_validator(mode="after")
    def _quantize_needs_ios16(self):
        if self.quantize != "none" and self.minimum_deployment_target == "iOS15":
            raise PydanticCustomError(
                "coreml_quantize", "quantized Core ML weights need minimum_deployment_target iOS16 or later", {"at": "quantize"}
            )
        return self


class OnnxExport(Section):
    opset: Annotated[int, Field(ge=13, le=18)] = 17
    nchw: bool = Field(False, description="NCHW input (no transpose at the model's entry)")
    simplify: bool = True


def _cpp_identifier(value: str | None) -> str | None:
    if value is None:
        return value
    from mdeploy.mace_rules import model_tag_problem

    problem = model_tag_problem(value)
    if problem:
        raise PydanticCustomError("cpp_identifier", problem)
    return value


class MaceExport(Section):
    """A frozen graph + deployment file for MACE (rules checked as MACE checks them)."""

    runtime: Literal["cpu", "gpu", "dsp", "hta", "apu", "cpu+gpu"] = "cpu+gpu"
    target_abis: list[Literal["armeabi-v7a", "arm64-v8a", "arm64", "armhf", "host"]] = Field(
        default_factory=lambda: ["arm64-v8a"], min_length=1
    )
    data_type: Literal["fp16_fp32", "fp32_fp32", "bf16_fp32", "fp16_fp16", "uint8"] | None = None
    winograd: Literal[0, 2, 4] = 0
    obfuscate: bool = False
    quantize: bool = False
    quantize_large_weights: bool = False
    library_name: str | None = Field(None, description="default: the recipe name as an identifier")
    model_tag: Annotated[str | None, AfterValidator(_cpp_identifier)] = Field(None, description="default: from the recipe name")
    graph_format: Literal["file", "code"] = "file"
    data_format: Literal["file", "code"] = "file"
    validation_threshold: dict[Literal["cpu", "gpu", "hexagon", "dsp", "hta", "quantize"], Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=dict, description="cosine-similarity thresholds of MACE's validation, written at the model level (defaults CPU 0.999, GPU 0.995, HEXAGON, HTA and QUANTIZE 0.98; dsp means hexagon; quantized models use quantize)"
    )

    @model_validator(mode="after")
    def _mace_rules(self):
        if self.graph_format == "file" and self.data_format == "code":
            raise PydanticCustomError("mace_formats", "MACE does not support graph_format file with data_format code", {"at": "data_format"})
        if self.quantize and self.quantize_large_weights:
            raise PydanticCustomError("mace_quantize", "quantize and quantize_large_weights cannot both be on", {"at": "quantize_large_weights"})
        from mdeploy.mace_rules import DATA_TYPES

        if self.data_type is not None and self.data_type not in DATA_TYPES[self.runtime]:
            raise PydanticCustomError(
                "mace_data_type",
                "data_type {dt} is not valid for runtime {rt} (expected one of {ok})",
                {"dt": self.data_type, "rt": self.runtime, "ok": ", ".join(sorted(DATA_TYPES[self.runtime])), "at": "data_type"},
            )
        return self


def _default_export() -> "ExportSection":
    return ExportSection(tflite=TfliteExport())


class ExportSection(Section):
    """The formats to build. Without an `export` section, mdeploy builds TFLite fp32."""

    tflite: TfliteExport | None = None
    coreml: CoremlExport | None = None
    onnx: OnnxExport | None = None
    mace: MaceExport | None = None


# ---------------------------------------------------------------------------- verify


class Tolerance(Section):
    max_abs: NonNegativeFloat | None = Field(
        None, description="largest allowed absolute difference of any output value (finite, 0 or more)"
    )
    min_agreement: Fraction | None = Field(
        None, description="smallest allowed fraction of keypoints whose heatmap argmax cell agrees"
    )


class ParitySamples(Section):
    random: Annotated[int, Field(ge=0, le=64)] = Field(4, description="random images (seeded)")
    photos: bool = Field(True, description="add the real photos shipped with scikit-image and matplotlib")
    images: list[RecipePath] = Field(default_factory=list, description="your own images")
    seed: Seed = Field(0, description=f"seed of the random images ({SEED_HELP})")


class SplitGate(Section):
    max_drop: Percent = Field(description="largest allowed drop (percentage points, 0 to 100) on this split")


MAX_CROPS = 64


def _crops(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CROPS):
        return value
    raise PydanticCustomError("crops", "expected auto or a whole number from 1 to {most}, got {value}",
                              {"most": MAX_CROPS, "value": repr(value)})


class AccuracyGate(Section):
    """Every artifact's accuracy on every validation split against the canonical model's."""

    metric: Literal["auto", "pckh@0.5", "pck@0.2_torso", "pefm_pckh", "ap_oks", "mpjpe", "pa_mpjpe", "pck3d@150"] = Field(
        "auto", description="metric the gate compares; auto: each split's primary metric (PCKh where the data has head joints, "
        "else PCK@0.2 torso; MPJPE for 3-D splits)"
    )
    max_drop: Percent = Field(1.0, description="largest allowed drop against the canonical model: percentage points (0 to 100), "
                              "or mm (0 to 100) for the 3-D errors MPJPE and PA-MPJPE, where a drop is an increase")
    splits: dict[Slug, SplitGate] = Field(default_factory=dict, description="per validation split, e.g. {real: {max_drop: 2.0}}")
    crops: Annotated[Literal["auto"] | int, BeforeValidator(_crops)] = Field(
        "auto", description="crops each person is scored through (the original, then jittered ones; single-person models): "
        "the gate compares the means, so a small split's weak joints do not decide it; auto: enough for 200 "
        "person-crops per split, at most 32 per person, one for generated splits"
    )


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` as false; in a policy key the user meant the word."""
    return "off" if value is False else value


class VerifySection(Section):
    parity: Literal["fail", "warn"] = Field("fail", description="what a parity failure does to the build")
    samples: ParitySamples = Field(default_factory=ParitySamples)
    tolerances: dict[ArtifactId, Tolerance] = Field(default_factory=dict, description="per artifact, e.g. tflite/fp16")
    accuracy: AccuracyGate | None = None
    gpu_ops: Annotated[Literal["fail", "warn", "off"], BeforeValidator(_yaml_off)] = Field(
        "warn", description="TFLite ops the GPU delegate would leave to the CPU: fail the build, warn, or ignore"
    )
    find_people: Annotated[Literal["fail", "warn", "off"], BeforeValidator(_yaml_off)] = Field(
        "fail", description="the canonical model must find a person on the photos of people (catches a wrong preprocessing)"
    )

    @model_validator(mode="after")
    def _some_samples(self):
        if self.samples.random == 0 and not self.samples.photos and not self.samples.images:
            raise PydanticCustomError(
                "no_samples", "parity needs at least one sample: random, photos or images", {"at": "samples"}
            )
        return self


# ---------------------------------------------------------------------------- app, devices, bench

def _identifier_check(check):
    """A pydantic validator from one of mdeploy.codegen.escape's checks (same rules, recipe-style message)."""

    def validate(value: str) -> str:
        from mdeploy.codegen import escape
        from mdeploy.errors import InputError

        try:
            return getattr(escape, check)(value)
        except InputError as err:
            raise PydanticCustomError("identifier", "{m}", {"m": err.message}) from None

    return AfterValidator(validate)


def _android_artifact(value: str) -> str:
    if not value.startswith("tflite/"):
        raise PydanticCustomError(
            "app_artifact", "the Android app runs a TFLite artifact (tflite/fp32, tflite/fp16, ...), got {v}", {"v": repr(value)}
        )
    return value


def _ios_artifact(value: str) -> str:
    if not value.startswith("coreml"):
        raise PydanticCustomError("app_artifact", "the iOS app runs a Core ML artifact (coreml), got {v}", {"v": repr(value)})
    return value


class AndroidApp(Section):
    project: RecipePath = Field(description="the Android app folder the glue goes into (scaffolded when missing)")
    package: Annotated[str, _identifier_check("check_package")] = "com.mdeploy.pose"
    artifact: Annotated[ArtifactId, AfterValidator(_android_artifact)] = "tflite/fp32"
    name: Annotated[str, _identifier_check("check_display_name")] = Field("Pose Demo", description="the app's label on the phone")


class IosApp(Section):
    project: RecipePath = Field(description="the iOS app folder the glue goes into (scaffolded when missing)")
    artifact: Annotated[ArtifactId, AfterValidator(_ios_artifact)] = "coreml"
    name: Annotated[str, _identifier_check("check_ios_display_name")] = Field(
        "Pose Demo", description="the app's name on the phone (no '$(' or '${': Xcode would expand it in Info.plist)"
    )
    bundle_id: Annotated[str, _identifier_check("check_bundle_id")] = "com.mdeploy.PoseDemo"


class AppSection(Section):
    android: AndroidApp | None = None
    ios: IosApp | None = None


class BenchSection(Section):
    runs: Annotated[int, Field(gt=0, le=100_000)] = Field(50, description="timed runs per trial (1 to 100000)")
    warmup: Annotated[int, Field(ge=0, le=100_000)] = Field(5, description="untimed runs before each trial (0 to 100000)")
    trials: Annotated[int, Field(gt=0, le=100)] = Field(3, description="repeats of the whole measurement (spread, throttling), 1 to 100")
    threads: list[Annotated[int, Field(gt=0, le=256)]] = Field(
        default_factory=lambda: [1], min_length=1, description="thread counts to measure (1 to 256 each)"
    )
    delegates: list[Literal["cpu", "xnnpack", "gpu", "nnapi"]] = Field(
        default_factory=lambda: ["xnnpack"], min_length=1, description="TFLite delegates (the host has cpu and xnnpack)"
    )
    artifacts: list[ArtifactId] | None = Field(None, description="default: app.android.artifact, else every TFLite and ONNX artifact")
    benchmark_binary: dict[Literal["arm64-v8a", "armeabi-v7a", "x86_64", "x86"], RecipePath] = Field(
        default_factory=dict, description="TFLite benchmark_model per ABI (mdeploy never downloads it)"
    )
    mace_run: dict[Literal["arm64-v8a", "armeabi-v7a", "x86_64", "x86"], RecipePath] = Field(
        default_factory=dict, description="MACE's mace_run per ABI, for benchmarking the mace artifact"
    )
    mace_model: RecipePath | None = Field(None, description="folder where MACE's converter wrote <model_tag>.pb and .data")
    mace_config: RecipePath | None = Field(
        None, description="the deployment file MACE's converter made bench.mace_model from, if not the build's own (checked against the graph)"
    )
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        600.0, description="longest a benchmark run may go without output (seconds, at most 86400)"
    )
    max_latency_ms: dict[Slug, Annotated[float, Field(gt=0, le=3_600_000)]] = Field(
        default_factory=dict, description="per device: fail above this median (ms, at most 3600000)"
    )


# ---------------------------------------------------------------------------- recipe


class Recipe(Section):
    """A build recipe. Paths are relative to the file that wrote them."""

    extends: str | None = Field(None, description="base recipe to merge under this one (maps merge, lists replace)")
    name: Slug = Field(description="names the build folder and generated identifiers")
    description: str = ""
    model: ModelSection
    data: DataSection | None = None
    train: TrainSection = Field(default_factory=TrainSection, description="used when model.arch is trained")
    export: ExportSection = Field(default_factory=_default_export)
    verify: VerifySection = Field(default_factory=VerifySection)
    app: AppSection | None = None
    devices: list[Slug] = Field(default_factory=list, description="device aliases from devices.yaml; host always exists")
    bench: BenchSection | None = None

    @model_validator(mode="after")
    def _training_needs_data(self):
        if self.model.arch is not None and (self.data is None or self.data.train is None):
            raise PydanticCustomError(
                "train_data", "training model.arch needs a data.train split (synthetic, coco or mpii)", {"at": "data"}
            )
        # A per-channel std reaches Core ML too: its image input takes range and mean, the graph
        # 1 / std per channel (exporters/coreml.py).
        tflite = self.export.tflite
        if tflite is not None and "int8" in tflite.variants:
            split = self.calibration_split()
            if self.data is None or getattr(self.data, split) is None:
                raise PydanticCustomError(
                    "calibration_data",
                    "the int8 variant calibrates on data.{split} (export.tflite.calibration.split), which the recipe lacks",
                    {"split": split, "at": "export"},
                )
            if tflite.mixed_precision.enabled is True and (self.verify.accuracy is None or not self.val_splits(absent=True)):
                raise PydanticCustomError(
                    "mixed_precision",
                    "the search for the layers that break verify.accuracy needs verify.accuracy and a data.val split "
                    "(enabled: auto searches only where the recipe has them)",
                    {"at": "export.tflite.mixed_precision.enabled"},
                )
            calibration = getattr(self.data, split)
            if calibration.synthetic is None:
                for name, val, _ in self.val_splits(absent=True):
                    if val.synthetic is not None:
                        continue
                    if calibration.images is not None:
                        measured = Path(getattr(val, val.source).images)
                        shared = any(measured == f or (calibration.images.recursive and f in measured.parents)
                                     for f in calibration.images.folders)
                    else:
                        shared = Path(getattr(val, val.source).annotations) == Path(getattr(calibration, calibration.source).annotations)
                    if shared:
                        raise PydanticCustomError(
                            "calibration_val",
                            "data.{split} {holds} the validation split {name}: the int8 variant would be scored on the images "
                            "it was calibrated on",
                            {"split": split, "name": name, "holds": "holds the images of" if calibration.images else "is",
                             "at": f"data.{split}.images.folders" if calibration.images else "export"},
                        )
        gate = self.verify.accuracy
        if gate is not None and gate.splits:
            known = [name for name, _, _ in self.val_splits(absent=True)]
            for name in gate.splits:
                if name not in known:
                    raise PydanticCustomError(
                        "unknown_name", unknown_name_message("validation split", name, known or ["(none: the recipe has no data.val)"]),
                        {"at": "verify"},
                    )
        return self

    def calibration_split(self) -> str:
        """The split int8 calibration reads: the recipe's choice, else data.calibration, else data.train."""
        tflite = self.export.tflite
        if tflite is not None and tflite.calibration.split is not None:
            return tflite.calibration.split
        return "calibration" if self.data is not None and self.data.calibration is not None else "train"

    def mixed_precision_search(self) -> bool:
        """Whether the int8 variant runs the mixed-precision search when it fails verify.accuracy:
        export.tflite.mixed_precision.enabled, and for `auto` a gate and a validation split here."""
        tflite = self.export.tflite
        if tflite is None or "int8" not in tflite.variants or tflite.mixed_precision.enabled is False:
            return False
        return self.verify.accuracy is not None and bool(self.val_splits())

    def val_splits(self, *, absent: bool = False) -> list[tuple[str, DataSplit, tuple]]:
        """(name, split, key path) of every validation split (none without data.val)."""
        return self.data.val_splits(absent=absent) if self.data is not None else []

    # Where the recipe came from; set by the loader.
    _path: Path | None = PrivateAttr(None)
    _sources: Any = PrivateAttr(None)
    _overrides: tuple[str, ...] = PrivateAttr(())
    _explicit: frozenset = PrivateAttr(frozenset())

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def root(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    @property
    def overrides(self) -> tuple[str, ...]:
        return self._overrides

    def where(self, *keypath: str | int, key: bool = False) -> str | None:
        """`file:line:col` of a value (or of its key), for messages about valid-but-unusable values."""
        if self._sources is None:
            return None
        mark = self._sources.mark_for(tuple(keypath), prefer_key=key)
        return str(mark) if mark else None

    def given(self, *keypath: str) -> bool:
        """Whether the recipe (or an override) wrote this key, rather than a default filling it."""
        return tuple(keypath) in self._explicit

    def section_json(self, *keypath: str) -> Any:
        """A section as JSON data with paths relative to the recipe folder (for hashing)."""
        node: Any = self
        for key in keypath:
            node = node[key] if isinstance(key, int) else getattr(node, "import_" if key == "import" else key)
        if isinstance(node, BaseModel):
            return node.model_dump(mode="json", by_alias=True, context={"root": self.root})
        return node
