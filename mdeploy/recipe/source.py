"""Reading recipe YAML while keeping where every key and value came from.

A recipe becomes plain Python data (dicts, lists, scalars) plus a `SourceMap` from key
paths to file positions. Strings remember the folder of the file that wrote them, so a
relative path in a base recipe resolves against the base, not the recipe extending it.
`extends` merges (maps merge, lists and scalars replace, `null` removes an inherited
key) and the positions merge with the data, so errors in inherited keys point into the
base file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mdeploy.errors import InputError, RecipeError
from mdeploy.limits import NotRegular, limit, raise_hint, read_regular

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file (or in a `--set` argument)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe: where, which key, what is wrong."""

    mark: Mark | None
    keypath: KeyPath
    message: str

    def render(self) -> str:
        where = f"{self.mark}: " if self.mark else ""
        key = format_keypath(self.keypath)
        return f"{where}{key}: {self.message}" if key else f"{where}{self.message}"

    def to_json(self) -> dict:
        return {
            "file": self.mark.file if self.mark else None,
            "line": self.mark.line if self.mark else None,
            "col": self.mark.col if self.mark else None,
            "key": format_keypath(self.keypath),
            "message": self.message,
        }


def format_keypath(keypath: KeyPath) -> str:
    out = ""
    for part in keypath:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class SourcedStr(str):
    """A string scalar that remembers the folder its recipe file lives in."""

    origin: Path

    def __new__(cls, value: str, origin: Path):
        obj = super().__new__(cls, value)
        obj.origin = origin
        return obj

    def __reduce__(self):
        return (SourcedStr, (str(self), self.origin))


@dataclass
class SourceMap:
    """Key path -> (mark of the key, mark of the value)."""

    keys: dict[KeyPath, Mark] = field(default_factory=dict)
    values: dict[KeyPath, Mark] = field(default_factory=dict)

    def mark_for(self, keypath: KeyPath, *, prefer_key: bool = False) -> Mark | None:
        """The best position for `keypath`, walking up to the nearest known parent."""
        path = tuple(keypath)
        while True:
            primary, secondary = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if path in primary:
                return primary[path]
            if path in secondary:
                return secondary[path]
            if not path:
                return None
            path = path[:-1]

    def drop(self, prefix: KeyPath) -> None:
        n = len(prefix)
        for table in (self.keys, self.values):
            for key in [k for k in table if k[:n] == prefix and len(k) >= n]:
                del table[key]

    def update(self, other: SourceMap) -> None:
        self.keys.update(other.keys)
        self.values.update(other.values)


def _mark(node_mark, display: str) -> Mark:
    return Mark(display, node_mark.line + 1, node_mark.column + 1)


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def parse_yaml(text: str, display: str, origin: Path) -> tuple[Any, SourceMap]:
    """YAML text -> (plain data, positions). Raises RecipeError with the YAML error's mark."""
    loader = None
    sources = SourceMap()
    try:
        loader = _BoundedLoader(text, display)  # checks every character: inside the try
        node = loader.get_single_node()
        if node is None:
            return None, sources
        data = _construct(loader, node, (), sources, display, origin)
    except yaml.reader.ReaderError as err:  # a character YAML does not allow (NUL, other controls)
        raise RecipeError([RecipeIssue(_position(text, err.position, display), (), f"YAML syntax: {_char_problem(err.character)}")]) from None
    except yaml.MarkedYAMLError as err:
        mark = _mark(err.problem_mark, display) if err.problem_mark else None
        problem = err.problem or "invalid YAML"
        context = f" ({err.context})" if err.context else ""
        raise RecipeError([RecipeIssue(mark, (), f"YAML syntax: {problem}{context}")]) from None
    except yaml.YAMLError as err:  # pragma: no cover - non-marked errors are rare
        raise RecipeError([RecipeIssue(Mark(display, 1, 1), (), f"YAML syntax: {err}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, sources


def _position(text: str, index: int, display: str) -> Mark:
    line_start = text.rfind("\n", 0, index) + 1
    return Mark(display, text.count("\n", 0, index) + 1, index - line_start + 1)


def _char_problem(char: int | str) -> str:
    code = char if isinstance(char, int) else ord(char)
    return f"character U+{code:04X} is not allowed (recipes hold printable text; tabs and line breaks are fine)"


def control_char(text: str) -> str | None:
    """The first control character of `text` other than tab and line feed, if any."""
    for ch in text:
        code = ord(ch)
        if (code < 0x20 and ch not in "\t\n") or 0x7F <= code <= 0x9F:
            return ch
    return None


_PLAIN_TAGS = {yaml.MappingNode: ("tag:yaml.org,2002:map", "mapping"), yaml.SequenceNode: ("tag:yaml.org,2002:seq", "list")}


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader within bounds (mdeploy.limits): nesting depth while composing and
    in merge-key (<<) chains, and the number of values once aliases are expanded (`_construct`),
    so an alias bomb or a 5000-deep document is one error, not a hang or a RecursionError."""

    def __init__(self, text: str, display: str):
        super().__init__(text)
        self.display = display
        self.depth = 0
        self.max_depth = limit("yaml_depth")
        self.values_left = limit("yaml_values")

    def too_deep(self, mark) -> RecipeError:
        return RecipeError([RecipeIssue(_mark(mark, self.display), (), f"nested deeper than {self.max_depth} levels")],
                           hint=raise_hint("yaml_depth"))

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                raise self.too_deep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def flatten_mapping(self, node):
        self.depth += 1  # merge keys that merge mappings that merge ... recurse here
        try:
            if self.depth > self.max_depth:
                raise self.too_deep(node.start_mark)
            return super().flatten_mapping(node)
        finally:
            self.depth -= 1


def _bound(loader, node, keypath: KeyPath) -> None:
    """One more value of the document: refuse past the depth and value-count bounds."""
    left = getattr(loader, "values_left", None)
    if left is None:
        return
    if len(keypath) > loader.max_depth:  # aliases nest anchored nodes inside each other
        raise loader.too_deep(node.start_mark)
    if left <= 0:
        raise RecipeError(
            [RecipeIssue(_mark(node.start_mark, loader.display), keypath,
                         f"more than {limit('yaml_values'):,} values once aliases (*) are expanded")],
            hint=raise_hint("yaml_values"),
        )
    loader.values_left = left - 1


def _construct(loader, node, keypath: KeyPath, sources: SourceMap, display: str, origin: Path):
    _bound(loader, node, keypath)
    sources.values[keypath] = _mark(node.start_mark, display)
    plain, kind = _PLAIN_TAGS.get(type(node), (None, None))
    if plain is not None and node.tag != plain:  # refused like an unknown tag on a scalar
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise RecipeError([RecipeIssue(_mark(node.start_mark, display), keypath, f"the tag {tag!r} is not allowed on a {kind} (recipes are plain YAML)")])
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<) behave as in any YAML loader
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RecipeError(
                    [RecipeIssue(_mark(key_node.start_mark, display), keypath, "keys must be plain strings")]
                )
            key = loader.construct_object(key_node)
            if isinstance(key, str) and control_char(key) is not None:
                raise RecipeError([RecipeIssue(_mark(key_node.start_mark, display), keypath, _char_problem(control_char(key)))])
            if not isinstance(key, str):
                key = str(key) if isinstance(key, (int, float, bool)) else key
            if key in out:
                raise RecipeError(
                    [RecipeIssue(_mark(key_node.start_mark, display), keypath + (key,), "duplicate key")]
                )
            sources.keys[keypath + (key,)] = _mark(key_node.start_mark, display)
            out[key] = _construct(loader, value_node, keypath + (key,), sources, display, origin)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, keypath + (i,), sources, display, origin)
            for i, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str):
        bad = control_char(value)
        if bad is not None:  # written as an escape ("\0", "\x1b"): it would reach files, terminals and reports
            raise RecipeError([RecipeIssue(_mark(node.start_mark, display), keypath, _char_problem(bad))])
        return SourcedStr(value, origin)
    return value


def merge(base: Any, base_src: SourceMap, over: Any, over_src: SourceMap, keypath: KeyPath = ()) -> Any:
    """Merge `over` onto `base`: maps merge, lists and scalars replace, null deletes."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            sub = keypath + (key,)
            if value is None:
                out.pop(key, None)
                base_src.drop(sub)
                continue
            if key in out and isinstance(out[key], dict) and isinstance(value, dict):
                out[key] = merge(out[key], base_src, value, over_src, sub)
            else:
                base_src.drop(sub)
                out[key] = value
                _copy_positions(over_src, base_src, sub)
            if sub in over_src.keys:
                base_src.keys[sub] = over_src.keys[sub]
        return out
    base_src.drop(keypath)
    _copy_positions(over_src, base_src, keypath)
    return over


def _copy_positions(src: SourceMap, dst: SourceMap, prefix: KeyPath) -> None:
    n = len(prefix)
    for table_src, table_dst in ((src.keys, dst.keys), (src.values, dst.values)):
        for key, mark in table_src.items():
            if key[:n] == prefix:
                table_dst[key] = mark


def read_yaml_file(path: Path, display: str, what: str = "recipe") -> str:
    """The text of a YAML file: a regular file (never a FIFO or device) within `recipe_bytes`,
    UTF-8, line breaks as `\n`. Raises FileNotFoundError, NotRegular or RecipeError."""
    raw = read_regular(path, what, "recipe_bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError([RecipeIssue(Mark(display, 1, 1), (), f"not UTF-8 text ({err.reason})")]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text-mode reading did


def load_tree(path: Path, _chain: tuple[Path, ...] = ()) -> tuple[dict, SourceMap]:
    """Load a recipe file and everything it extends into one tree of data and positions."""
    path = Path(os.path.abspath(path))
    display = display_path(path)
    try:
        text = read_yaml_file(path, display)
    except FileNotFoundError:
        if _chain:
            raise  # reported by the caller, at the `extends` key that named it
        raise InputError(f"recipe not found: {display}", hint="check the path, or run `mdeploy init NAME`") from None
    except NotRegular as err:
        if _chain:
            raise  # reported by the caller, at the `extends` key that named it
        raise InputError(err.message.replace(str(path), display), hint=err.hint) from None

    data, sources = parse_yaml(text, display, path.parent)
    if data is None:
        raise RecipeError([RecipeIssue(Mark(display, 1, 1), (), "the recipe is empty")])
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(sources.mark_for(()), (), "a recipe must be a mapping of keys to values")])

    parent = data.pop("extends", None)
    if parent is None:
        return _drop_nulls(data), sources
    if not isinstance(parent, str) or not parent.strip():
        raise RecipeError(
            [RecipeIssue(sources.mark_for(("extends",)), ("extends",), "expected the path of a base recipe")]
        )
    base_path = Path(os.path.abspath(path.parent / parent))
    if base_path in _chain + (path,):
        cycle = " -> ".join(display_path(p) for p in _chain + (path, base_path))
        raise RecipeError([RecipeIssue(sources.mark_for(("extends",)), ("extends",), f"cycle: {cycle}")])
    if len(_chain) + 2 > limit("extends_depth"):
        raise RecipeError([RecipeIssue(sources.mark_for(("extends",)), ("extends",),
                                       f"more than {limit('extends_depth')} recipes in one extends chain")],
                          hint=raise_hint("extends_depth"))
    try:
        base, base_src = load_tree(base_path, _chain + (path,))
    except FileNotFoundError:
        raise RecipeError(
            [RecipeIssue(sources.mark_for(("extends",)), ("extends",), f"base recipe not found: {display_path(base_path)}")]
        ) from None
    except NotRegular as err:
        message = "base " + err.message.replace(str(base_path), display_path(base_path))
        raise RecipeError([RecipeIssue(sources.mark_for(("extends",)), ("extends",), message)], hint=err.hint) from None
    for key in [k for k in sources.keys if k[:1] == ("extends",)]:
        del sources.keys[key]
    sources.values.pop(("extends",), None)
    return _drop_nulls(merge(base, base_src, data, sources)), base_src


def _drop_nulls(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_nulls(v) for v in data]
    return data


def apply_overrides(data: dict, sources: SourceMap, overrides: list[str], cwd: Path) -> dict:
    """Apply `--set key.path=value` overrides (values are YAML) onto the merged tree."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        display = f"--set {_printable(item)}"  # never a raw control character on the terminal
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}", hint="for example --set train.epochs=2")
        parts = key.split(".")
        if any(not p for p in parts):
            raise InputError(f"{display}: empty part in key path {key!r}")
        if control_char(key) is not None:
            raise InputError(f"{display}: {_char_problem(control_char(key))}")
        if parts[0] == "extends":
            raise InputError(
                f"{display}: extends cannot be overridden (the recipe's extends chain is read before any --set)",
                hint="write a recipe that extends the other one, or pass the other recipe",
            )
        value_mark = Mark(display, 1, item.index("=") + 2)
        try:
            value, vsrc = parse_yaml(raw, display, cwd) if raw.strip() else (None, SourceMap())
        except RecipeError as err:  # positions inside the value -> positions in the argument
            raise RecipeError([_in_argument(i, tuple(parts), value_mark) for i in err.issues], hint=err.hint) from None
        target = data
        walked: list[str] = []
        for part in parts[:-1]:
            walked.append(part)
            nxt = target.get(part)
            if nxt is None:
                nxt = target[part] = {}
            elif not isinstance(nxt, dict):
                raise InputError(
                    f"{display}: cannot set {key}: {'.'.join(walked)} is {_kind(nxt)}, not a mapping"
                )
            target = nxt
        keypath = tuple(parts)
        sources.drop(keypath)
        if value is None:
            target.pop(parts[-1], None)
            sources.keys[keypath] = Mark(display, 1, 1)  # "required key is missing" points here
            continue
        target[parts[-1]] = _drop_nulls(value)
        sources.keys[keypath] = Mark(display, 1, 1)
        for sub, mark in vsrc.values.items():
            sources.values[keypath + sub] = Mark(display, 1, value_mark.col + mark.col - 1)
    return data


def _printable(text: str) -> str:
    """`text` with control characters shown as escapes (\\x01), for messages."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if control_char(ch) else ch for ch in text)


def _in_argument(issue: RecipeIssue, keypath: KeyPath, value_mark: Mark) -> RecipeIssue:
    """An issue found parsing a `--set` value, placed in the argument and under the key it sets."""
    mark = issue.mark
    col = value_mark.col + mark.col - 1 if mark is not None and mark.line == 1 else value_mark.col
    return RecipeIssue(Mark(value_mark.file, 1, col), keypath + issue.keypath, issue.message)


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
