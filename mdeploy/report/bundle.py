"""`--bundle FILE.zip`: a build folder (artifacts, manifest, report, results) as one file.

The zip is reproducible: members sorted, a fixed time and permissions, so the same build
folder always gives the same bytes. Written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mdeploy.errors import InputError
from mdeploy.fsutil import iter_files

FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def write_bundle(build_dir: Path, target: Path) -> Path:
    target = Path(target)
    if target.suffix != ".zip":
        raise InputError(f"--bundle {target}: the bundle is a zip file; name it *.zip")
    if target.exists() and not target.is_file():
        raise InputError(f"--bundle {target} exists and is not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    prefix = Path(build_dir).name
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in iter_files(build_dir):
                info = zipfile.ZipInfo(f"{prefix}/{path.relative_to(build_dir).as_posix()}", date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
                zf.writestr(info, path.read_bytes())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
