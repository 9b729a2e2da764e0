"""Model files named by URL: download once into a cache keyed by checksum, verify, reuse.

A download goes to a temporary name and is renamed into `downloads/<sha256>/` only after
its checksum matches, so a bad or interrupted download never poisons the cache.
Archives (.zip, .tar, .tar.gz, .tgz) are unpacked into the cache under their own sha256
(`unpacked/<sha256>/`), so a changed archive is unpacked again and nothing is written beside
the user's file; members that would land outside the folder are refused.

Bounds (mdeploy.limits): a download stops at `download_bytes` and at `download_seconds` for
the whole transfer (a watchdog shuts the socket, so a server that stalls or drips cannot
hold a build); `file://` reads regular files only. The temporary `.part` file and a download
folder left empty are removed on failure; those of a killed process (its pid is in the
name) on the next download. Archives are listed before anything is unpacked and refused past
`unpack_members`, `unpack_bytes` or a compression ratio of `unpack_ratio`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

from mdeploy.errors import EnvironmentProblem, MdeployError, ModelError
from mdeploy.fsutil import owner_gone, sha256_file
from mdeploy.limits import ArchiveBudget, human_bytes, limit, open_regular, raise_hint

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
_BLOCK = 1 << 16


def fetch(url: str, sha256: str, cache_root: Path, *, where: str | None = None, timeout: float = 60.0) -> Path:
    """The local path of the verified file at `url` (downloading it if not cached)."""
    name = Path(urllib.parse.urlparse(url).path).name or "model"
    downloads = Path(cache_root) / "downloads"
    folder = downloads / sha256
    target = folder / name
    if target.is_file():
        if sha256_file(target) == sha256:
            return target
        target.unlink()  # damaged cache entry: download again
    remove_stale_downloads(downloads)
    tmp, fh = _new_part(folder, name)
    try:
        with fh:
            got = _download(url, fh, where=where, timeout=timeout)
        if got != sha256:
            raise ModelError(  # the file's own digest is not shown: through file:// it would reveal local files' hashes
                f"checksum mismatch for {url}: its sha256 is not the expected {sha256}",
                where=where,
                hint="the file changed or the checksum in the recipe is wrong; nothing was cached",
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_if_empty(folder)
        raise
    return target


def remove_stale_downloads(downloads: Path) -> None:
    """Remove what killed downloads left: `.part` files of processes that have ended, and
    download folders left empty."""
    if not downloads.is_dir():
        return
    for folder in downloads.iterdir():
        if folder.is_symlink() or not folder.is_dir():
            continue
        for part in folder.glob(".*.part-*"):
            if owner_gone(part.name):
                part.unlink(missing_ok=True)
        _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (a cached file, another build's download) or already gone


def _new_part(folder: Path, name: str):
    """A new `.part` file in `folder`, named with this process's id (see `owner_gone`)."""
    tmp = folder / f".{name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return tmp, open(tmp, "xb")
        except FileNotFoundError:
            continue  # another build removed the folder as empty in between: make it again
    return tmp, open(tmp, "xb")


def _download(url: str, out, *, where: str | None, timeout: float) -> str:
    """Copy `url` into the open file `out` within the size and time limits; its sha256."""
    max_bytes, deadline = limit("download_bytes"), limit("download_seconds")
    started = time.monotonic()
    digest = hashlib.sha256()
    watch = _Watchdog()
    timer = threading.Timer(deadline, watch.expire)
    timer.daemon = True
    timer.start()
    total = 0

    def too_big(detail: str) -> ModelError:
        return ModelError(f"cannot download {url}: {detail}, over the limit of {human_bytes(max_bytes)}", where=where,
                          hint=raise_hint("download_bytes"))

    try:
        with _open_url(url, watch, where=where, timeout=min(timeout, deadline)) as response:
            length = _announced_size(response)
            if length is not None and length > max_bytes:
                raise too_big(f"it is {human_bytes(length)}")
            read = getattr(response, "read1", None) or response.read
            while True:
                if watch.expired or time.monotonic() - started > deadline:
                    raise _late(url, deadline, where)
                block = read(_BLOCK)
                if not block:
                    break
                total += len(block)
                if total > max_bytes:
                    raise too_big("the file is larger")
                digest.update(block)
                out.write(block)
        if watch.expired:  # the watchdog shut the socket: what arrived is cut short
            raise _late(url, deadline, where)
    except MdeployError:
        raise
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        if watch.expired:
            raise _late(url, deadline, where) from None
        reason = getattr(err, "reason", None) or err
        raise EnvironmentProblem(
            f"cannot download {url}: {reason}",
            where=where,
            hint="check the address and the network, or download the file yourself and use 'path'",
        ) from err
    finally:
        timer.cancel()
    return digest.hexdigest()


def _announced_size(response) -> int | None:
    """The size a response announces (Content-Length), or a local file's size."""
    headers = getattr(response, "headers", None)
    if headers is not None:
        length = (headers.get("Content-Length") or "").strip()
        return int(length) if length.isdigit() else None
    try:
        return os.fstat(response.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


def _late(url: str, deadline: int, where: str | None) -> EnvironmentProblem:
    return EnvironmentProblem(f"cannot download {url}: not complete after {deadline} s", where=where,
                              hint=raise_hint("download_seconds") + "; or download the file yourself and use 'path'")


def _open_url(url: str, watch: _Watchdog, *, where: str | None, timeout: float):
    """A readable response for `url`: a regular local file for file://, else urllib with
    every connection registered with the watchdog."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise urllib.error.URLError(f"file:// on another host ({parsed.netloc})")
        local = urllib.request.url2pathname(parsed.path)
        return open_regular(local, "download source", where=where, error=ModelError)
    opener = urllib.request.build_opener(_watched_handler(urllib.request.HTTPHandler, watch),
                                         _watched_handler(urllib.request.HTTPSHandler, watch), _NoFTP())
    return opener.open(url, timeout=timeout)


class _NoFTP(urllib.request.FTPHandler):
    """A redirect to ftp:// is refused (its connections would escape the watchdog)."""

    def ftp_open(self, req):
        raise urllib.error.URLError("a redirect to ftp:// is not followed")


class _Watchdog:
    """Shuts the download's sockets when the deadline passes, so no read can block past it."""

    def __init__(self):
        self.expired = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def register(self, sock) -> None:
        with self.lock:
            self.sockets.append(sock)
            late = self.expired
        if late:
            _shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            sockets = list(self.sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched_handler(base: type, watch: _Watchdog):
    class Handler(base):
        def do_open(self, http_class, req, **kwargs):
            class Connection(http_class):
                def connect(self):
                    super().connect()
                    watch.register(self.sock)

            return super().do_open(Connection, req, **kwargs)

    return Handler()


def verify_checksum(path: Path, sha256: str, *, where: str | None = None) -> None:
    """A local import that states its checksum must match it."""
    from mdeploy.fsutil import sha256_path

    if sha256_path(path) != sha256:
        raise ModelError(  # the file's own digest is not shown (a recipe could probe any readable file)
            f"checksum mismatch for {path}: its sha256 is not the expected {sha256}",
            where=where,
            hint="the model file changed since the recipe was written; if that is intended, put its sha256 "
                 "(`sha256sum FILE`) in the recipe",
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
        budget = ArchiveBudget(archive, ModelError, where)
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():  # the central directory: nothing is decompressed yet
                    budget.add(info.filename, info.file_size)  # zipfile stops reading a member at this size
                    _check_member(tmp, info.filename, archive, where)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                members = []
                for member in tf:  # header by header: a member over the budget stops before its data is read
                    if not (member.isfile() or member.isdir()):
                        raise ModelError(f"archive {archive.name} holds a link or device file: {member.name}", where=where)
                    budget.add(member.name, member.size)
                    _check_member(tmp, member.name, archive, where)
                    members.append(member)
                tf.extractall(tmp, members=members, filter="data")
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
