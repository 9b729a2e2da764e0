"""Model files named by URL: download once into a cache keyed by checksum, verify, reuse.

A download goes to a temporary name and is renamed into `downloads/<sha256>/` only after
its checksum matches, so a bad or interrupted download never poisons the cache.
Archives (.zip, .tar, .tar.gz, .tgz) are unpacked next to the file, refusing members
that would land outside the folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

from mdeploy.errors import EnvironmentProblem, ModelError
from mdeploy.fsutil import sha256_file

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def fetch(url: str, sha256: str, cache_root: Path, *, where: str | None = None, timeout: float = 60.0) -> Path:
    """The local path of the verified file at `url` (downloading it if not cached)."""
    name = Path(urllib.parse.urlparse(url).path).name or "model"
    folder = cache_root / "downloads" / sha256
    target = folder / name
    if target.is_file():
        if sha256_file(target) == sha256:
            return target
        target.unlink()  # damaged cache entry: download again
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                fh.write(block)
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise EnvironmentProblem(
            f"cannot download {url}: {reason}",
            where=where,
            hint="check the address and the network, or download the file yourself and use 'path'",
        ) from err
    got = digest.hexdigest()
    if got != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}",
            where=where,
            hint="the file changed or the checksum in the recipe is wrong; nothing was cached",
        )
    os.replace(tmp, target)
    return target


def verify_checksum(path: Path, sha256: str, *, where: str | None = None) -> None:
    """A local import that states its checksum must match it."""
    from mdeploy.fsutil import sha256_path

    got = sha256_path(path)
    if got != sha256:
        raise ModelError(
            f"checksum mismatch for {path}: expected sha256 {sha256}, got {got}",
            where=where,
            hint="the model file changed since the recipe was written; update sha256 if that is intended",
        )


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, *, where: str | None = None) -> Path:
    """Unpack an archive next to itself (once); returns the folder holding its contents."""
    dest = archive.parent / (archive.name + ".d")
    if dest.is_dir():
        return _single_root(dest)
    tmp = archive.parent / f".{archive.name}.{uuid.uuid4().hex[:8]}.d"
    tmp.mkdir()
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _check_member(tmp, member, archive, where)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if not (member.isfile() or member.isdir()):
                        raise ModelError(f"archive {archive.name} holds a link or device file: {member.name}", where=where)
                    _check_member(tmp, member.name, archive, where)
                tf.extractall(tmp, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot unpack {archive.name}: {err}", where=where) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)
    return _single_root(dest)


def _check_member(root: Path, name: str, archive: Path, where: str | None) -> None:
    target = (root / name).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep) and target != root.resolve():
        raise ModelError(f"archive {archive.name} has a member outside its folder: {name}", where=where)


def _single_root(folder: Path) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
