"""The rules of a MACE deployment file, as MACE's converter (`tools/converter.py`) applies them.

Recipe validation (model tags, data types per runtime), the MACE exporter (the file it
writes) and the devices (the runtimes `mace_run` is asked for, a deployment file a user
converted their model with) all read these rules from here. This module imports no
converter and no TensorFlow, so configuring and pushing never load an export stage.

MACE's converter needs TensorFlow 1.x and bazel and cannot run here, so mdeploy checks a
yml against every rule MACE applies to the keys it writes (and reads them from the same
parsed YAML a user would edit). `validate` returns every problem found; `graph_problems`
compares a file's tensors and shapes with those of the graph it is meant for.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Any

from mdeploy.fsutil import sha256_file

ABIS = {"armeabi-v7a", "arm64-v8a", "arm64", "armhf", "host"}
FORMATS = {"file", "code"}
PLATFORMS = {"tensorflow", "caffe", "onnx", "megengine", "keras", "pytorch"}
RUNTIMES = {"cpu", "gpu", "dsp", "hta", "apu", "cpu+gpu"}
# Data types per runtime as MACE's converter checks them (`get_data_type`): dsp takes uint8,
# apu floats or uint8, every other runtime (hta included) the floating-point types.
FP_DATA_TYPES = {"fp16_fp32", "fp32_fp32", "bf16_fp32", "fp16_fp16"}
DATA_TYPES = {
    "cpu": FP_DATA_TYPES,
    "gpu": FP_DATA_TYPES,
    "cpu+gpu": FP_DATA_TYPES,
    "hta": FP_DATA_TYPES,
    "dsp": {"uint8"},
    "apu": {"fp16_fp32", "fp32_fp32", "uint8"},
}
DATA_LAYOUTS = {"NONE", "NHWC", "NCHW", "OIHW"}
WINOGRAD = {0, 2, 4}

# The devices a model of each runtime runs on (`mace_run --device`; cpu+gpu libraries hold both).
RUNTIME_DEVICES = {
    "cpu": ("CPU",),
    "gpu": ("GPU",),
    "cpu+gpu": ("CPU", "GPU"),
    "dsp": ("HEXAGON",),
    "hta": ("HTA",),
    "apu": ("APU",),
}
# `validation_threshold` is a model-level mapping (MACE's converter reads it from the model,
# not from a subgraph). Its keys are matched case-insensitively, DSP meaning HEXAGON; any
# other key (APU among them) stops the converter. A quantized CPU/GPU model is validated
# against QUANTIZE. Defaults are MACE's.
THRESHOLD_DEVICES = ("CPU", "GPU", "HEXAGON", "HTA", "QUANTIZE")
THRESHOLD_ALIASES = {"DSP": "HEXAGON"}
DEFAULT_THRESHOLDS = {"CPU": 0.999, "GPU": 0.995, "HEXAGON": 0.98, "HTA": 0.98, "QUANTIZE": 0.98}

# C++ keywords a model tag may not be (MACE generates C++ symbols from it).
CPP_KEYWORDS = set(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
    compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype default
    delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline int long
    mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
    reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template this
    thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t while xor
    xor_eq""".split()
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHAPE = re.compile(r"^\d+(,\d+)*$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def model_tag_problem(tag: str) -> str | None:
    if not _IDENT.fullmatch(tag):  # fullmatch: "$" alone accepts a trailing newline
        return f"model tag {tag!r} is not a C++ identifier (letters, digits, '_', not starting with a digit)"
    if tag in CPP_KEYWORDS or keyword.iskeyword(tag):
        return f"model tag {tag!r} is a C++ keyword"
    return None


def tag_for(name: str) -> str:
    """A valid model tag from a recipe name (slugs may hold '-' or start with a digit)."""
    tag = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not tag or tag[0].isdigit() or tag in CPP_KEYWORDS:
        tag = f"model_{tag}"
    return tag


def threshold_device(name: Any) -> str | None:
    """The validation device a `validation_threshold` key names (None: MACE refuses the key)."""
    key = str(name).upper()
    key = THRESHOLD_ALIASES.get(key, key)
    return key if key in THRESHOLD_DEVICES else None


def validation_devices(runtime: str, quantized: bool = False) -> tuple[str, ...]:
    """The `validation_threshold` keys MACE validates a model of `runtime` with (APU has none)."""
    out = []
    for device in RUNTIME_DEVICES[runtime]:
        if quantized and device in ("CPU", "GPU"):
            device = "QUANTIZE"
        if device in THRESHOLD_DEVICES and device not in out:
            out.append(device)
    return tuple(out)


def thresholds_for(runtime: str, quantized: bool, overrides: dict | None = None) -> dict[str, float]:
    """The thresholds to write for a model: MACE's defaults, with `overrides` (any key case) on top."""
    values = dict(DEFAULT_THRESHOLDS)
    for key, value in (overrides or {}).items():
        device = threshold_device(key)
        if device is None:
            raise ValueError(f"MACE has no validation threshold for {key!r} (it takes {', '.join(THRESHOLD_DEVICES)})")
        values[device] = value
    return {device: values[device] for device in validation_devices(runtime, quantized)}


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def validate(config: Any, base: Path | None = None, check_files: bool = True) -> list[str]:
    """Every rule a MACE deployment file breaks, as 'key: problem' lines (empty when valid).

    With `check_files`, a local `model_file_path` must exist (relative to `base`) and match
    its sha256; without, only the checksum's form is checked (a file converted elsewhere).
    """
    problems: list[str] = []
    if not isinstance(config, dict):
        return ["the deployment file must be a mapping"]

    def need(key: str, where: dict, prefix: str = "") -> Any:
        if key not in where:
            problems.append(f"{prefix}{key}: required key is missing")
            return None
        return where[key]

    name = need("library_name", config)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append("library_name: must be a non-empty string")
    abis = need("target_abis", config)
    if abis is not None:
        bad = [a for a in _as_list(abis) if a not in ABIS]
        if not _as_list(abis) or bad:
            problems.append(f"target_abis: expected some of {sorted(ABIS)}, got {abis}")
    graph = need("model_graph_format", config)
    data = need("model_data_format", config)
    for key, value in (("model_graph_format", graph), ("model_data_format", data)):
        if value is not None and value not in FORMATS:
            problems.append(f"{key}: expected file or code, got {value!r}")
    if graph == "file" and data == "code":
        problems.append("model_graph_format file with model_data_format code is not supported by MACE")

    models = need("models", config)
    if models is not None and (not isinstance(models, dict) or not models):
        problems.append("models: must map at least one model tag to its settings")
        models = {}
    for tag, model in (models or {}).items():
        p = f"models.{tag}."
        issue = model_tag_problem(str(tag))
        if issue:
            problems.append(f"models.{tag}: {issue}")
        if not isinstance(model, dict):
            problems.append(f"models.{tag}: must be a mapping")
            continue
        platform = need("platform", model, p)
        if platform is not None and platform not in PLATFORMS:
            problems.append(f"{p}platform: expected one of {sorted(PLATFORMS)}, got {platform!r}")
        path = need("model_file_path", model, p)
        sha = need("model_sha256_checksum", model, p)
        if sha is not None and not _SHA.match(str(sha)):
            problems.append(f"{p}model_sha256_checksum: expected 64 lowercase hexadecimal digits")
        elif check_files and sha is not None and path and not str(path).startswith(("http://", "https://")):
            local = Path(path) if Path(path).is_absolute() or base is None else base / path
            if not local.is_file():
                problems.append(f"{p}model_file_path: no such file: {path}")
            elif sha256_file(local) != sha:
                problems.append(f"{p}model_sha256_checksum: does not match {path}")
        runtime = need("runtime", model, p)
        if runtime is not None and runtime not in RUNTIMES:
            problems.append(f"{p}runtime: expected one of {sorted(RUNTIMES)}, got {runtime!r}")
        dtype = model.get("data_type")
        if dtype is not None and runtime in DATA_TYPES and dtype not in DATA_TYPES[runtime]:
            problems.append(f"{p}data_type: {dtype!r} is not valid for runtime {runtime} (expected {sorted(DATA_TYPES[runtime])})")
        if model.get("winograd", 0) not in WINOGRAD:
            problems.append(f"{p}winograd: expected 0, 2 or 4, got {model.get('winograd')!r}")
        for flag in ("obfuscate", "quantize", "quantize_large_weights"):
            if model.get(flag, 0) not in (0, 1):
                problems.append(f"{p}{flag}: expected 0 or 1, got {model.get(flag)!r}")
        if model.get("quantize", 0) == 1 and model.get("quantize_large_weights", 0) == 1:
            problems.append(f"{p}quantize and quantize_large_weights cannot both be 1")
        problems += _thresholds(model.get("validation_threshold"), p)
        subgraphs = need("subgraphs", model, p)
        if subgraphs is not None and (not isinstance(subgraphs, list) or not subgraphs):
            problems.append(f"{p}subgraphs: must be a non-empty list")
            subgraphs = []
        for i, sub in enumerate(subgraphs or []):
            problems += _subgraph(sub, f"{p}subgraphs[{i}].")
    return problems


def _thresholds(thresholds: Any, p: str) -> list[str]:
    if thresholds is None:
        return []
    if not isinstance(thresholds, dict):
        return [f"{p}validation_threshold: must map devices to thresholds"]
    problems = []
    for device, value in thresholds.items():
        if threshold_device(device) is None:
            problems.append(f"{p}validation_threshold: MACE's converter refuses device {device!r} (it takes {', '.join(THRESHOLD_DEVICES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            problems.append(f"{p}validation_threshold.{device}: expected a number in (0, 1], got {value!r}")
    return problems


def _subgraph(sub: Any, p: str) -> list[str]:
    if not isinstance(sub, dict):
        return [f"{p[:-1]}: must be a mapping"]
    problems = []
    lists = {}
    for key in ("input_tensors", "input_shapes", "output_tensors", "output_shapes"):
        if key not in sub:
            problems.append(f"{p}{key}: required key is missing")
        lists[key] = [str(v) for v in _as_list(sub.get(key))]
    for side in ("input", "output"):
        names, shapes = lists[f"{side}_tensors"], lists[f"{side}_shapes"]
        if len(names) != len(shapes):
            problems.append(f"{p}{side}_shapes: {len(shapes)} shapes for {len(names)} {side}_tensors")
        for shape in shapes:
            if not _SHAPE.match(shape.replace(" ", "")):
                problems.append(f"{p}{side}_shapes: {shape!r} is not comma-separated integers like 1,192,192,3")
        layouts = _as_list(sub.get(f"{side}_data_formats"))
        if layouts:
            if len(layouts) != len(names):
                problems.append(f"{p}{side}_data_formats: {len(layouts)} entries for {len(names)} {side}_tensors")
            bad = [v for v in layouts if v not in DATA_LAYOUTS]
            if bad:
                problems.append(f"{p}{side}_data_formats: expected some of {sorted(DATA_LAYOUTS)}, got {bad}")
        problems += _layout_ranks(layouts, shapes, f"{p}{side}_data_formats")
    ranges = [str(v) for v in _as_list(sub.get("input_ranges"))]
    if ranges and len(ranges) != len(lists["input_tensors"]):
        problems.append(f"{p}input_ranges: {len(ranges)} ranges for {len(lists['input_tensors'])} input_tensors")
    for r in ranges:
        try:
            lo, hi = (float(v) for v in r.split(","))
            if lo >= hi:
                raise ValueError
        except ValueError:
            problems.append(f"{p}input_ranges: {r!r} is not 'min,max' with min < max")
    if "validation_threshold" in sub:
        problems.append(
            f"{p}validation_threshold: MACE's converter reads validation_threshold from the model "
            "(models.<tag>.validation_threshold) and ignores it in a subgraph"
        )
    return problems


def data_format_for(shape) -> str:
    """The data format a tensor of `shape` takes in a deployment file: NHWC when 4-D, else NONE."""
    return "NHWC" if len(shape) == 4 else "NONE"


def _layout_ranks(layouts: list, shapes: list[str], key: str) -> list[str]:
    """A data format (NHWC, NCHW) belongs to 4-D tensors only: MACE transposes such tensors between
    layouts and asks for NONE on any other (a 3-D model's [1, 17, 3] coordinates). Left out, the
    format is NHWC for every tensor."""
    problems = []
    for k, shape in enumerate(shapes):
        if not _SHAPE.match(shape.replace(" ", "")):
            continue  # reported as a malformed shape
        layout = str(layouts[k]) if k < len(layouts) else (str(layouts[0]) if len(layouts) == 1 else "NHWC")
        rank = len(shape.split(","))
        if layout in ("NHWC", "NCHW") and rank != 4:
            given = "" if k < len(layouts) or len(layouts) == 1 else " (the default when left out)"
            problems.append(f"{key}: {layout}{given} for the {rank}-D shape {shape.replace(' ', '')}; "
                            "a tensor that is not 4-D takes NONE")
    return problems


def shape_text(shape) -> str:
    return ",".join(str(int(d)) for d in shape)


def graph_problems(config: Any, io: dict, tag: str | None = None) -> list[str]:
    """Where a deployment file's tensors and shapes differ from the graph's.

    `io` holds the graph's `input` node name and `input_shape`, and its outputs: `outputs`
    (every output, `{"name", "shape"}`, in order: a PAF model has `heatmaps` and `pafs`) or,
    for one output, `output`/`output_shape`. Every model of the file (or only `tag`) is
    compared through its first subgraph, the one MACE converts. A file whose subgraph is
    malformed is left to `validate`.
    """
    problems: list[str] = []
    models = config.get("models") if isinstance(config, dict) else None
    if not isinstance(models, dict):
        return problems
    graph = {
        "input": [(io["input"], shape_text(io["input_shape"]))],
        "output": [(o["name"], shape_text(o["shape"])) for o in io["outputs"]] if io.get("outputs")
        else [(io["output"], shape_text(io["output_shape"]))],
    }
    for name, model in models.items():
        if tag is not None and name != tag:
            continue
        subs = model.get("subgraphs") if isinstance(model, dict) else None
        if not isinstance(subs, list) or not subs or not isinstance(subs[0], dict):
            continue
        sub, p = subs[0], f"models.{name}.subgraphs[0]."
        for side in ("input", "output"):
            names = [str(v).removesuffix(":0") for v in _as_list(sub.get(f"{side}_tensors"))]
            shapes = [str(v).replace(" ", "") for v in _as_list(sub.get(f"{side}_shapes"))]
            want_names = [n for n, _ in graph[side]]
            if names != want_names:
                graph_has = f"{side} is {want_names[0]!r}" if len(want_names) == 1 else f"{side}s are {want_names}"
                problems.append(f"{p}{side}_tensors: {names}, but the graph's {graph_has}")
                continue
            for (tensor, want_shape), shape in zip(graph[side], shapes, strict=False):
                if shape != want_shape:
                    problems.append(f"{p}{side}_shapes: {shape}, but the graph's {side} {tensor} is {want_shape}")
    return problems
