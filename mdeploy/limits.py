"""The bounds on what mdeploy reads: recipes, downloads, archives, `.keras` files and images.

Every input a user (or a recipe from someone else) can point mdeploy at is read within a
bound, so a hostile or broken file ends in one clear error (exit 2) after seconds and a few
megabytes, never in a hang, a `RecursionError` or a `MemoryError`:

- only regular files are opened: FIFOs, devices, sockets (and symlinks to them) are refused
  from a `stat` before anything opens them, and again from the opened descriptor;
- sizes, counts, depths and durations have the limits in `DEFAULTS` (docs/architecture.md,
  "Limits"). Each can be changed for one run with the environment variable
  `MDEPLOY_LIMIT_<NAME>` (an integer: bytes, seconds, pixels or a count), e.g.
  `MDEPLOY_LIMIT_DOWNLOAD_BYTES=8589934592` for an 8 GiB model.
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mdeploy.errors import InputError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

DEFAULTS: dict[str, int] = {
    "recipe_bytes": 1 * MIB,  # a recipe file, each file it extends, devices.yaml
    "yaml_depth": 64,  # nesting of mappings and lists (after aliases are expanded)
    "yaml_values": 20_000,  # values of one YAML document after aliases are expanded (a recipe has ~100)
    "extends_depth": 16,  # recipes in one `extends` chain
    "download_bytes": 4 * GIB,  # one model file downloaded from a url
    "download_seconds": 3600,  # the whole download, connection included
    "unpack_bytes": 8 * GIB,  # the members of one archive (.zip/.tar*/.keras) together
    "unpack_members": 10_000,  # members of one archive
    "unpack_ratio": 100,  # unpacked size / archive size, checked above `RATIO_FLOOR`
    "keras_json_bytes": 16 * MIB,  # config.json / metadata.json inside a .keras file
    "image_pixels": 64_000_000,  # width x height of any image mdeploy decodes (8000 x 8000)
    "build_json_bytes": 64 * MIB,  # manifest.json, report.json, bench/*.json of a build folder
}

# Archives that unpack to less than this are never refused for their compression ratio
# (a small model of zeros compresses very well and is harmless).
RATIO_FLOOR = 64 * MIB


def limit(name: str) -> int:
    """The limit `name`: its default, or `MDEPLOY_LIMIT_<NAME>` when that is set."""
    env = f"MDEPLOY_LIMIT_{name.upper()}"
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return DEFAULTS[name]
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(f"{env}={raw!r} is not an integer") from None
    if value <= 0:
        raise InputError(f"{env}={raw!r} must be positive")
    return value


def raise_hint(name: str) -> str:
    return f"the limit is {describe(name, limit(name))}; MDEPLOY_LIMIT_{name.upper()}=N raises it for one run"


def describe(name: str, value: int) -> str:
    if name.endswith("_bytes"):
        return human_bytes(value)
    if name.endswith("_seconds"):
        return f"{value} s"
    if name.endswith("_pixels"):
        return f"{value:,} pixels"
    return f"{value:,}"


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------- regular files


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


class NotRegular(InputError):
    """A path that names a FIFO, a device, a socket or a folder where a file is needed."""


def open_regular(path: Path | str, what: str = "file", *, where: str | None = None, follow_symlinks: bool = True,
                 error: type[InputError] = NotRegular) -> BinaryIO:
    """Open a regular file for reading; anything else is refused before it is opened.

    `FileNotFoundError` passes through (callers word "not found" their own way). With
    `follow_symlinks=False` a symlink is refused too (files of a build folder).
    """
    st = os.stat(path) if follow_symlinks else os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is {file_kind(st.st_mode)}, not a regular file", where=where)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a FIFO swapped in since the stat cannot hang here
    except OSError as err:
        if not follow_symlinks and os.path.islink(path):
            raise error(f"{what} {path} is a symlink, not a regular file", where=where) from None
        raise err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is {file_kind(st.st_mode)}, not a regular file", where=where)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path | str, what: str, limit_name: str, *, where: str | None = None,
                 follow_symlinks: bool = True, error: type[InputError] = NotRegular) -> bytes:
    """The bytes of a regular file of at most `limit(limit_name)` bytes (else `error`)."""
    cap = limit(limit_name)
    with open_regular(path, what, where=where, follow_symlinks=follow_symlinks, error=error) as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(cap + 1) if size <= cap else b""
    if size > cap or len(data) > cap:
        raise error(f"{what} {path} is larger than {human_bytes(cap)}", where=where, hint=raise_hint(limit_name))
    return data


def read_build_file(path: Path | str) -> bytes:
    """A JSON file mdeploy wrote into a build folder: never through a symlink, never a device
    or FIFO, at most `build_json_bytes`. Anything else is an `OSError`, as an unreadable file is."""
    try:
        return read_regular(path, "file", "build_json_bytes", follow_symlinks=False)
    except InputError as err:
        raise OSError(err.message) from None


def check_input_path(path: Path | str, what: str, *, where: str | None = None, error: type[InputError] = NotRegular) -> None:
    """A model file or folder named by a recipe: a regular file, or a folder holding only
    regular files and folders (symlinks to those are fine). FIFOs, devices and sockets are
    refused before anything reads them. `FileNotFoundError` passes through."""
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode):
        return
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is {file_kind(st.st_mode)}, not a regular file or folder", where=where)
    seen = 0
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            seen += 1
            if seen > limit("unpack_members"):
                raise error(f"{what} {path} holds more than {limit('unpack_members'):,} entries", where=where,
                            hint=raise_hint("unpack_members"))
            entry = Path(folder) / name
            try:
                mode = os.stat(entry).st_mode
            except FileNotFoundError:
                raise error(f"{what} {path} holds a broken symlink: {entry}", where=where) from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise error(f"{what} {path} holds {file_kind(mode)}: {entry}", where=where)


def is_plain(path: Path | str, root: Path | str | None = None) -> bool:
    """A regular file, or a folder holding only regular files and folders, with no symlink
    anywhere in it (nor between `root` and it): what mdeploy itself writes into a build."""
    path = Path(path)
    if root is not None:
        for parent in Path(os.path.relpath(path, root)).parents:
            if str(parent) != "." and (Path(root) / parent).is_symlink():
                return False
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode):
            return True
        if not stat.S_ISDIR(mode):
            return False
        for folder, dirs, files in os.walk(path):  # symlinked folders are listed, not entered
            for name in dirs + files:
                mode = os.lstat(os.path.join(folder, name)).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    return False
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------- archives


class ArchiveBudget:
    """Counts an archive's members as they are listed and refuses one over the limits
    (member count, total unpacked size, compression ratio) before it is unpacked."""

    def __init__(self, archive: Path, error: type[InputError], where: str | None = None):
        self.archive = Path(archive)
        self.packed = max(1, os.stat(archive).st_size)
        self.error, self.where = error, where
        self.members = self.total = 0
        self.max_members, self.max_bytes, self.max_ratio = limit("unpack_members"), limit("unpack_bytes"), limit("unpack_ratio")

    def add(self, name: str, size: int) -> None:
        self.members += 1
        self.total += max(0, int(size))
        label = self.archive.name
        if self.members > self.max_members:
            raise self.error(f"archive {label} holds more than {self.max_members:,} members", where=self.where,
                             hint=raise_hint("unpack_members"))
        if self.total > self.max_bytes:
            raise self.error(f"archive {label} unpacks to more than {human_bytes(self.max_bytes)} (at {name})",
                             where=self.where, hint=raise_hint("unpack_bytes"))
        if self.total > RATIO_FLOOR and self.total > self.max_ratio * self.packed:
            raise self.error(
                f"archive {label} unpacks to more than {self.max_ratio} times its size "
                f"({human_bytes(self.total)} from {human_bytes(self.packed)}): refused as a decompression bomb",
                where=self.where, hint=raise_hint("unpack_ratio"),
            )


# ---------------------------------------------------------------------------- images


@contextlib.contextmanager
def open_image(path: Path | str, *, where: str | None = None) -> Iterator:
    """A PIL image (lazy: only its header read) of a regular file within the pixel budget.

    The budget is checked from the header, before any pixel is decoded; Pillow's own
    decompression-bomb error (past twice its `MAX_IMAGE_PIXELS`, raised to the budget when the
    budget is above it) is an `InputError` too. `FileNotFoundError` passes through.
    """
    from PIL import Image, UnidentifiedImageError

    budget = limit("image_pixels")
    if Image.MAX_IMAGE_PIXELS is not None and budget > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = budget  # a budget raised past Pillow's: Pillow must not refuse first
    fh = open_regular(path, "image", where=where)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the budget below decides
                img = Image.open(fh)
        except Image.DecompressionBombError:
            raise InputError(f"image {path} has more than {budget:,} pixels", where=where,
                             hint=raise_hint("image_pixels")) from None
        except UnidentifiedImageError:
            raise InputError(f"cannot read image {path}: not an image format Pillow reads", where=where) from None
        except OSError as err:
            raise InputError(f"cannot read image {path}: {err}", where=where) from None
        with img:
            check_pixels(img.width, img.height, f"image {path}", where=where)
            yield img
    finally:
        fh.close()


def check_pixels(width: int, height: int, what: str, *, where: str | None = None) -> None:
    budget = limit("image_pixels")
    if int(width) * int(height) > budget:
        raise InputError(f"{what} is {width}x{height} ({int(width) * int(height):,} pixels), over the budget of {budget:,}",
                         where=where, hint=raise_hint("image_pixels"))
