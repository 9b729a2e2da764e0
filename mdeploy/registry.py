"""One registry mechanism for everything looked up by name.

Models, keypoint sets, importers and exporters are registered under a name and looked
up by it. An unknown name fails with the valid names and the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mdeploy.errors import InputError

T = TypeVar("T")


def closest(word: str, options: list[str] | tuple[str, ...]) -> str | None:
    """The option nearest to `word`, if any is near enough to be a likely typo."""
    lowered = {o.lower(): o for o in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not found:
        found = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)]
    return found[0] if found else None


def unknown_name_message(kind: str, name: str, options: list[str] | tuple[str, ...]) -> str:
    near = closest(str(name), options)
    hint = f" (did you mean {near!r}?)" if near and near != name else ""
    return f"unknown {kind} {name!r}{hint}; expected one of: {', '.join(sorted(options))}"


class Registry(Generic[T]):
    """Name -> object, filled by a decorator at import time."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None):
        """`registry.register(name, item)` or `@registry.register(name)`."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        if item is not None:
            return add(item)
        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise InputError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


def lazy(module: str, attr: str) -> Callable:
    """A callable that imports `module` only when first called (keeps heavy imports off start-up)."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = f"{module}.{attr}"
    return call
