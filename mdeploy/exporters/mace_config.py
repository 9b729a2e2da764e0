"""The rules of a MACE deployment file, checked by mdeploy before it hands one to a user.

MACE's own converter needs TensorFlow 1.x and bazel and cannot run here, so mdeploy
checks its yml against every rule MACE applies to the keys it writes (and reads them
from the same parsed YAML a user would edit). `validate` returns every problem found.
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
DATA_TYPES = {
    "cpu": {"fp16_fp32", "fp32_fp32", "bf16_fp32", "fp16_fp16"},
    "gpu": {"fp16_fp32", "fp32_fp32", "bf16_fp32", "fp16_fp16"},
    "cpu+gpu": {"fp16_fp32", "fp32_fp32", "bf16_fp32", "fp16_fp16"},
    "dsp": {"uint8"},
    "hta": {"uint8"},
    "apu": {"uint8"},
}
DATA_LAYOUTS = {"NONE", "NHWC", "NCHW", "OIHW"}
WINOGRAD = {0, 2, 4}
DEVICES = {"CPU", "GPU", "HEXAGON", "HTA", "APU"}
DEFAULT_THRESHOLDS = {"CPU": 0.999, "GPU": 0.995, "HEXAGON": 0.98}

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
    if not _IDENT.match(tag):
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


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def validate(config: Any, base: Path | None = None) -> list[str]:
    """Every rule a MACE deployment file breaks, as 'key: problem' lines (empty when valid)."""
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
        elif sha is not None and path and not str(path).startswith(("http://", "https://")):
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
        subgraphs = need("subgraphs", model, p)
        if subgraphs is not None and (not isinstance(subgraphs, list) or not subgraphs):
            problems.append(f"{p}subgraphs: must be a non-empty list")
            subgraphs = []
        for i, sub in enumerate(subgraphs or []):
            problems += _subgraph(sub, f"{p}subgraphs[{i}].")
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
    thresholds = sub.get("validation_threshold")
    if thresholds is not None:
        if not isinstance(thresholds, dict):
            problems.append(f"{p}validation_threshold: must map devices to thresholds")
        else:
            for device, value in thresholds.items():
                if device not in DEVICES:
                    problems.append(f"{p}validation_threshold: unknown device {device!r} (expected {sorted(DEVICES)})")
                if not isinstance(value, (int, float)) or not 0 < value <= 1:
                    problems.append(f"{p}validation_threshold.{device}: expected a number in (0, 1], got {value!r}")
    return problems
