"""`--bundle FILE.zip`: a build folder (artifacts, manifest, report, results) as one file.

The zip is reproducible: members sorted, a fixed time and permissions, so the same build
folder always gives the same bytes. Written to a temporary name and renamed when complete.

Only regular files are bundled, read without following symlinks: a symlink in the build
folder (which keeps what a user put there, symlinks included) is left out, and so are FIFOs,
devices and folders reached through symlinks. The bundle being written, and any earlier
bundle of this build lying in the folder (a zip holding `<name>/manifest.json`), are left out
too, so a bundle written inside its build folder does not grow on every run. Files are
streamed into the zip, never read whole into memory.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

from mdeploy.errors import InputError
from mdeploy.limits import open_regular

FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def write_bundle(build_dir: Path, target: Path) -> Path:
    build_dir, target = Path(build_dir), Path(target)
    if target.suffix != ".zip":
        raise InputError(f"--bundle {target}: the bundle is a zip file; name it *.zip")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise InputError(f"--bundle {target} exists and is not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    prefix = build_dir.name
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            skip = {_identity(tmp), _identity(target)}
            for rel, path in bundled_files(build_dir, skip):
                info = zipfile.ZipInfo(f"{prefix}/{rel}", date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                try:
                    with open_regular(path, "file", follow_symlinks=False) as src:
                        mode = os.fstat(src.fileno())
                        info.external_attr = (0o755 if mode.st_mode & 0o111 else 0o644) << 16
                        info.file_size = mode.st_size  # lets zipfile choose ZIP64 for large files
                        with zf.open(info, "w") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                except InputError:
                    continue  # replaced by a symlink or a FIFO since it was listed: left out
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def bundled_files(build_dir: Path, skip: set | None = None) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file a bundle of `build_dir` holds, sorted."""
    build_dir = Path(build_dir)
    skip = skip or set()
    out = []
    for folder, dirs, files in os.walk(build_dir):  # symlinked folders are listed in dirs, never entered
        here = Path(folder)
        dirs.sort()
        for name in files:
            path = here / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in skip:
                continue  # symlinks, FIFOs, devices, sockets; the bundle being written
            rel = path.relative_to(build_dir).as_posix()
            if name.lower().endswith(".zip") and _is_bundle_of(path, build_dir.name):
                continue
            out.append((rel, path))
    return sorted(out)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _is_bundle_of(path: Path, name: str) -> bool:
    """A zip written by `write_bundle` for the build `name` (an earlier bundle in the folder)."""
    try:
        with open_regular(path, "file", follow_symlinks=False) as fh, zipfile.ZipFile(fh) as zf:
            return f"{name}/manifest.json" in zf.NameToInfo
    except (InputError, OSError, zipfile.BadZipFile):
        return False
