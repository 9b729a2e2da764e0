"""Small file-system helpers: content hashes, atomic writes and folder swaps.

Everything mdeploy writes for the user goes through a temporary name first and is
renamed into place when complete, so an interrupted run never leaves a half-written
file under a final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
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
    """A hidden, unused name next to `path` (same file system, so renames are atomic).

    The name carries this process's id, so a cleanup only removes it once its owner is gone.
    """
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


_OWNED = re.compile(r"-(\d+)-[0-9a-f]{8}$")


def owner_gone(name: str) -> bool:
    """A temporary named by `unique_sibling` whose process has ended (or an older name without a pid)."""
    match = _OWNED.search(name)
    return match is None or not pid_alive(int(match.group(1)))


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
        if old.is_symlink():  # a link in place of the folder: drop the link, never its target
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Clean up after an interrupted run: drop temporaries, restore a folder swapped aside."""
    parent = final.parent
    if not parent.is_dir():
        return
    # Only what processes that have ended left: a running build's temporaries are its own.
    olds = sorted((p for p in parent.glob(f".{final.name}.old-*") if owner_gone(p.name)), key=lambda p: p.stat().st_mtime)
    if not final.exists() and olds:
        os.rename(olds.pop(), final)
    for stale in olds + [p for p in parent.glob(f".{final.name}.tmp-*") if owner_gone(p.name)]:
        shutil.rmtree(stale, ignore_errors=True)


def copy_tree_into(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into `dst` (copies, not links: the user may edit the build)."""
    for f in iter_files(src):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def link_or_copy(src: Path, dst: Path) -> None:
    """Give `dst` the contents of `src` (a hard link where the file system allows; symlinks stay links)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def carry_over_others(old: Path, new: Path, owned: Callable[[str], bool]) -> list[str]:
    """Bring what is not `owned` from the folder `old` into `new`.

    `owned` is asked about relative POSIX paths: of files, and of folders with a final "/"
    (an owned folder is skipped whole).

    Files keep their bytes (hard links or copies), symlinks stay symlinks (never followed),
    empty folders are made again. A path `new` already has is left to `new`. Returns the
    relative paths brought over.
    """
    kept: list[str] = []
    old, new = Path(old), Path(new)
    for folder, dirs, files in os.walk(old):
        here = Path(folder)
        prefix = "" if here == old else here.relative_to(old).as_posix() + "/"
        links = [d for d in dirs if (here / d).is_symlink()]
        empty = not dirs and not files
        dirs[:] = sorted(d for d in dirs if d not in links and not owned(f"{prefix}{d}/"))
        for name in sorted(files + links):
            rel = prefix + name
            if owned(rel) or _taken(new, rel):
                continue
            link_or_copy(here / name, new / rel)
            kept.append(rel)
        if prefix and empty and not _taken(new, prefix.rstrip("/")):
            (new / prefix).mkdir(parents=True)
            kept.append(prefix)
    return kept


def _taken(root: Path, rel: str) -> bool:
    """Whether `rel` (or a file where one of its folders would be) already exists under `root`."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink() or path.is_file():
            return True
        if not path.exists():
            return False
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock(2) on the file `path` for the `with` block.

    The lock file (and any folders made for it) is removed on release, while still held;
    a process that was waiting on the removed file notices and locks the new one instead.
    `on_wait` is called once if another process holds the lock (before waiting for it).
    """
    path = Path(path)
    made: list[Path] = []
    while True:
        for folder in reversed([path.parent, *path.parent.parents]):
            if not folder.exists():
                try:
                    folder.mkdir()
                    made.append(folder)
                except FileExistsError:
                    pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue  # its folder was removed by the lock's last holder: make it again
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                here = os.stat(path)
                mine = os.fstat(fd)
                current = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)  # the holder removed this file on release: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people: who holds it
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        for folder in reversed(made):  # folders made only for the lock, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
