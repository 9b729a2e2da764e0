"""Load, merge, override and validate a recipe; turn every problem into a positioned issue.

`load_recipe` is the one entry point: file -> `Recipe` (frozen) or `RecipeError` listing
every problem found, each with `FILE:LINE:COL: key.path: message`.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from mdeploy.errors import RecipeError
from mdeploy.recipe.schema import Recipe
from mdeploy.recipe.source import KeyPath, RecipeIssue, SourceMap, apply_overrides, load_tree
from mdeploy.registry import closest


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), cwd: Path | None = None) -> Recipe:
    """Read a recipe file (with its `extends` chain and `--set` overrides) into a frozen Recipe."""
    path = Path(path)
    data, sources = load_tree(path)
    data = apply_overrides(data, sources, list(overrides), cwd or Path.cwd())
    recipe = validate_tree(data, sources)
    recipe._path = Path(path).absolute()
    recipe._overrides = tuple(overrides)
    return recipe


def validate_tree(data: dict, sources: SourceMap) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        issues = [_issue(e, data, sources) for e in err.errors(include_url=False)]
        issues = _dedupe(issues)
        raise RecipeError(issues, hint="`mdeploy schema` prints every key a recipe accepts") from None
    recipe._sources = sources
    recipe._explicit = frozenset(_keypaths(data))
    return recipe


def validate_with(model: type[BaseModel], data: Any, sources: SourceMap, hint: str | None = None) -> BaseModel:
    """Validate any YAML tree read with positions (devices.yaml, ...) with recipe-quality errors."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        issues = _dedupe([_issue(e, data, sources, model) for e in err.errors(include_url=False)])
        raise RecipeError(issues, hint=hint) from None


def _keypaths(data: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _keypaths(value, prefix + (key,))
    return out


def _dedupe(issues: list[RecipeIssue]) -> list[RecipeIssue]:
    seen, out = set(), []
    for issue in issues:
        key = (issue.keypath, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    out.sort(key=lambda i: (i.mark.file, i.mark.line, i.mark.col) if i.mark else ("", 0, 0))
    return out


# ---------------------------------------------------------------------------- error mapping


def _data_path(data: Any, loc: tuple) -> tuple[KeyPath, bool]:
    """Strip pydantic's union tags from `loc`; also say whether the path ends on a dict key."""
    out: list = []
    node = data
    on_key = False
    for part in loc:
        if part == "[key]":
            on_key = True
            continue
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part not in node and not _is_tag(node, part):
            out.append(part)  # a missing key: keep it in the path
            node = None
        # else: a union tag (e.g. 'frozen_pb'), not a key of the data
    return tuple(out), on_key


def _lookup(data: Any, keypath: KeyPath) -> Any:
    for part in keypath:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _is_tag(node: dict, part: str) -> bool:
    return any(v == part for v in node.values() if isinstance(v, str)) or part in {"function-after", "function-before"}


def _strip(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            tp = get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
            else:
                return tp
        else:
            return tp


def _model_at(loc: tuple, root: type[BaseModel] = Recipe) -> Any:
    """The schema type at a pydantic `loc` (union tags select members)."""
    tp: Any = root
    for part in loc:
        tp = _strip(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif origin in (list, tuple):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin is typing.Union:
            members = [m for m in get_args(tp) if isinstance(_strip(m), type)]
            tp = next((m for m in members if _tag_of(_strip(m)) == part or _strip(m).__name__ == part), None)
            if tp is None:
                return None
        else:
            return None
    return _strip(tp)


def _tag_of(model: type) -> str | None:
    if issubclass(model, BaseModel) and "format" in model.model_fields:
        args = get_args(model.model_fields["format"].annotation)
        return args[0] if args else None
    return None


def _keys_of(tp: Any) -> list[str]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    if get_origin(tp) is typing.Union:
        keys: list[str] = []
        for m in get_args(tp):
            keys += [k for k in _keys_of(_strip(m)) if k not in keys]
        return keys
    return []


_TYPE_WORDS = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "int_parsing_size": "number too large",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path",
}


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    return repr(value if not isinstance(value, str) else str(value))


def _message(err: dict, loc: tuple, root: type[BaseModel] = Recipe) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1]
        options = _keys_of(_model_at(loc[:-1], root))
        near = closest(str(key), options) if options else None
        suggestion = f" (did you mean {near!r}?)" if near else ""
        allowed = f"; expected one of: {', '.join(options)}" if options else ""
        return f"unknown key {key!r}{suggestion}{allowed}"
    if kind == "missing":
        if loc and isinstance(loc[-1], int):
            arity = len(get_args(_model_at(loc[:-1], root)))
            got = len(value) if isinstance(value, list) else loc[-1]
            return f"expected {arity} items, got {got}"
        return "required key is missing"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx.get("expected", "")) or re.findall(r"\b(\w+)\b", ctx.get("expected", ""))
        near = closest(str(value), options) if isinstance(value, str) else None
        suggestion = f" (did you mean {near!r}?)" if near else ""
        return f"expected one of {', '.join(options)}; got {_show(value)}{suggestion}"
    if kind == "union_tag_invalid":
        options = re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        tag = ctx.get("tag")
        near = closest(str(tag), options)
        suggestion = f" (did you mean {near!r}?)" if near else ""
        return f"unknown format {tag!r}{suggestion}; expected one of: {', '.join(options)}"
    if kind == "union_tag_not_found":
        return f"required key {ctx.get('discriminator', 'format')} is missing"
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]}, got {_show(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {_show(value)}"
    if kind in ("too_short", "too_long"):
        if kind == "too_short" and ctx.get("min_length") == 1:
            return "must not be empty"
        want = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        return f"expected {word} {want} item{'s' if want != 1 else ''}, got {ctx.get('actual_length')}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be "):] + f", got {_show(value)}"
    return msg


def _issue(err: dict, data: dict, sources: SourceMap, root: type[BaseModel] = Recipe) -> RecipeIssue:
    loc = tuple(err["loc"])
    keypath, on_key = _data_path(data, loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing" and loc and isinstance(loc[-1], int):
        # A fixed-size list (tuple) with too few items: report the list, not a "key".
        message = _message(dict(err, input=_lookup(data, keypath)), loc, root)
        return RecipeIssue(sources.mark_for(keypath), keypath, message)
    message = _message(err, loc, root)
    if kind == "union_tag_invalid":
        keypath = keypath + ("format",)
    if ctx.get("at"):
        # A rule about a whole mapping that is best shown at one of its keys.
        keypath = keypath + tuple(int(p) if p.isdigit() else p for p in ctx["at"].split("."))
        mark = sources.mark_for(keypath, prefer_key=True)
    elif kind == "missing" and keypath in sources.keys:  # a key a --set removed
        mark = sources.keys[keypath]
    elif kind in ("missing", "union_tag_not_found"):
        mark = sources.mark_for(keypath[:-1] if kind == "missing" else keypath, prefer_key=True)
    elif kind == "extra_forbidden" or on_key or isinstance(err.get("input"), dict):
        mark = sources.mark_for(keypath, prefer_key=True)
    else:
        mark = sources.mark_for(keypath)
    # Tuples are validated element by element; report the whole value for fixed-size ones.
    if kind in ("too_short", "too_long") and isinstance(err.get("input"), list):
        mark = sources.mark_for(keypath)
    return RecipeIssue(mark, keypath, message)
