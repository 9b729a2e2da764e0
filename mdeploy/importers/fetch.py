"""Model files named by URL: download once into a cache keyed by checksum, verify, reuse.

A download goes to a temporary name and is renamed into `downloads/<sha256>/` only after
its checksum matches, so a bad or interrupted download never poisons the cache.
Archives (.zip, .tar, .tar.gz, .tgz) are unpacked into the cache under their own sha256
(`unpacked/<sha256>/`), so a changed archive is unpacked again and nothing is written beside
the user's file; members that would land outside the folder are refused.
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
from mdeploy.fsutil import owner_gone, sha256_file

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


def unpack(archive: Path, *, where: str | None = None, cache_root: Path | None = None) -> Path:
    """Unpack an archive once per content into `<cache>/unpacked/<sha256>/`; returns the folder
    holding its contents. A changed archive has another sha256, so it is unpacked afresh."""
    if cache_root is None:
        from mdeploy.pipeline import cache_root as default_root

        cache_root = default_root()
    folder = Path(cache_root) / "unpacked"
    digest = sha256_file(archive)
    dest = folder / digest
    if dest.is_dir():
        return _single_root(dest)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{digest}.*"):  # what a killed unpack of the same archive left
        if owner_gone(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = folder / f".{digest}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
    try:
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():
            raise
        # another build unpacked the same archive first: its folder is the same content
    return _single_root(dest)


def _check_member(root: Path, name: str, archive: Path, where: str | None) -> None:
    target = (root / name).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep) and target != root.resolve():
        raise ModelError(f"archive {archive.name} has a member outside its folder: {name}", where=where)


def _single_root(folder: Path) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
