"""Small file-system helpers: content hashes, atomic writes and folder swaps.

Everything mdeploy writes for the user goes through a temporary name first and is
renamed into place when complete, so an interrupted run never leaves a half-written
file under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_files(root: Path) -> list[Path]:
    """Every regular file under `root`, sorted by relative POSIX path."""
    root = Path(root)
    files = [p for p in root.rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder as the hash of its (relative path, file hash) list."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    return digest_entries((f.relative_to(path).as_posix(), sha256_file(f)) for f in iter_files(path))


def digest_entries(entries) -> str:
    """The folder digest of `sha256_path` from (relative path, file sha256) pairs."""
    digest = hashlib.sha256()
    for rel, file_sha in sorted(entries):
        digest.update(f"{rel}\0{file_sha}\n".encode())
    return digest.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in iter_files(path))


def sha256_json(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def unique_sibling(path: Path, tag: str) -> Path:
    """A hidden, unused name next to `path` (same file system, so renames are atomic)."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def swap_dir(new: Path, final: Path) -> None:
    """Put the complete folder `new` in place of `final` (which may not exist).

    The old folder is renamed aside before the new one moves in and is deleted last;
    `recover_dir` undoes a swap that was cut between the two renames.
    """
    old = None
    if final.exists():
        old = unique_sibling(final, "old")
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Clean up after an interrupted run: drop temporaries, restore a folder swapped aside."""
    parent = final.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not final.exists() and olds:
        os.rename(olds.pop(), final)
    for stale in olds + list(parent.glob(f".{final.name}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)


def copy_tree_into(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into `dst` (copies, not links: the user may edit the build)."""
    for f in iter_files(src):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
