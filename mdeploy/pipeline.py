"""Stages, cache keys and atomic assembly of a build folder.

A stage is a function that writes files (laid out as in the build folder) into a fresh
folder and returns a JSON record (artifacts, gate results). Its cache key is the hash of
its recipe section, its dependencies' keys (which cover their files), the versions of the
tools it calls and its own code version. Completed stages live in a content-addressed
cache (`stages/<key>/`); an unchanged key means the stage is not run again.

The build folder is assembled from cache entries in a temporary folder and swapped into
place when complete: an interrupted build leaves the previous build untouched, and the
stages that did complete are cached for the next one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from importlib import metadata
from pathlib import Path
from typing import Any

from mdeploy import __version__
from mdeploy.errors import EnvironmentProblem
from mdeploy.fsutil import iter_files, pid_alive, recover_dir, sha256_file, sha256_json, swap_dir, write_json

RECORD = "record.json"


def cache_root() -> Path:
    """`$MDEPLOY_CACHE_DIR`, else `$XDG_CACHE_HOME/mdeploy`, else `~/.cache/mdeploy`."""
    env = os.environ.get("MDEPLOY_CACHE_DIR")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "mdeploy").absolute()


def tool_version(dist: str) -> str:
    if dist == "python":
        return platform.python_version()
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class StageRecord:
    """A completed stage: its key, where its files are, and what it reported."""

    name: str
    key: str
    dir: Path
    data: dict
    status: str = "cached"  # "ran" | "cached"
    seconds: float = 0.0

    @property
    def out(self) -> Path:
        return self.dir / "out"

    @property
    def artifacts(self) -> list[dict]:
        return self.data.get("artifacts", [])

    @property
    def results(self) -> dict:
        return self.data.get("results", {})


@dataclass
class StageContext:
    """What a running stage sees: its output folder, its key, its dependencies, a logger."""

    stage: Stage
    out: Path
    deps: dict[str, StageRecord]
    log: Callable[[str], None]
    key: str = ""

    def dep(self, name: str) -> StageRecord:
        return self.deps[name]


@dataclass
class Stage:
    name: str
    describe: str
    run: Callable[[StageContext], dict]
    key: dict[str, Any]  # recipe sections and input-file hashes; JSON-able
    deps: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    code_version: int = 2  # raised when what stages write changes (2: reproducible serialization)
    publish: bool = True  # its files go into the build folder (data splits stay in the cache)
    code: tuple[str, ...] = ()  # mdeploy modules and folders it runs, whose source enters the key (`code_digest`)

    def selected_by(self, names: set[str]) -> bool:
        return self.name in names or any(g in names for g in self.groups)


class Cache:
    """Stage entries shared by every build that uses this folder (see docs/architecture.md).

    A build holds a shared flock on `locks/<key>.lock` of each entry it uses, from the lookup
    (or store) until `release()`; replacing or deleting an entry takes the exclusive lock
    without waiting, so an entry another build is reading is never swapped under it.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()
        self._locks: dict[str, int] = {}  # key -> fd holding a shared (briefly exclusive) flock
        self._private: list[Path] = []  # results kept out of the cache because an entry was in use

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def entry(self, key: str) -> Path:
        return self.stages / key

    def lookup(self, name: str, key: str, log: Callable[[str], None] | None = None) -> StageRecord | None:
        """A complete entry for `key` whose files match their sha256, or None.

        A damaged entry (a file changed, added or missing) is reported through `log` and
        dropped, unless another build is using it (then it is left to that build).
        """
        entry = self.entry(key)
        record = entry / RECORD
        if not record.is_file():
            return None
        self._lock(key, fcntl.LOCK_SH)  # from here on no other build replaces or removes it
        if not record.is_file():  # removed (or being replaced) before the lock was had
            self._unlock(key)
            return None
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            problem = _damage(entry / "out", data["files"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            problem = f"its record or files cannot be read ({err})"
        if problem is None:
            return StageRecord(name, key, entry, data)
        if log is not None:
            log(f"cached entry is damaged ({problem}); discarded")
        if self._lock(key, fcntl.LOCK_EX | fcntl.LOCK_NB):
            shutil.rmtree(entry, ignore_errors=True)
        self._unlock(key)
        return None

    def store(self, stage: Stage, key: str, staging: Path, data: dict, seconds: float) -> StageRecord:
        """Record the files of a finished stage and move its folder into the cache.

        When another build is using the entry of the same key, that entry stays and this
        build keeps its result in its own staging folder (removed by `release`).
        """
        out = staging / "out"
        files = {}
        for f in iter_files(out):
            files[f.relative_to(out).as_posix()] = {"sha256": sha256_file(f), "size": f.stat().st_size}
        data = dict(data)
        data["files"] = files
        data["stage"] = stage.name
        data["key"] = key
        data["seconds"] = round(seconds, 3)
        write_json(staging / RECORD, data)
        entry = self.entry(key)
        held = key in self._locks
        if not self._lock(key, fcntl.LOCK_EX | fcntl.LOCK_NB):
            if held:
                self._lock(key, fcntl.LOCK_SH)  # a failed conversion may have dropped the lock held
            else:
                self._unlock(key)
            self._private.append(staging)
            return StageRecord(stage.name, key, staging, data, status="ran", seconds=seconds)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            recover_dir(entry)  # a swap of this entry cut by a kill
            swap_dir(staging, entry)  # replaces an entry re-made with --no-cache
        finally:
            self._lock(key, fcntl.LOCK_SH)
        return StageRecord(stage.name, key, entry, data, status="ran", seconds=seconds)

    def _lock(self, key: str, how: int) -> bool:
        """Take (or convert this cache's) flock on the entry's lock file; False when LOCK_NB failed."""
        fd = self._locks.get(key)
        if fd is None:
            folder = self.root / "locks"
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._locks[key] = fd
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            return False
        return True

    def _unlock(self, key: str) -> None:
        fd = self._locks.pop(key, None)
        if fd is not None:
            os.close(fd)

    def release(self) -> None:
        """Let go of the entries this cache used (other builds may replace them again) and
        remove results kept outside the cache."""
        for key in list(self._locks):
            self._unlock(key)
        for folder in self._private:
            shutil.rmtree(folder, ignore_errors=True)
        self._private.clear()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def staging_dir(self) -> Path:
        path = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        (path / "out").mkdir(parents=True)
        return path

    def prune_stale(self) -> None:
        """Remove staging folders of processes that no longer exist (killed mid-stage);
        a running build's folders (its pid is in their names) are left alone."""
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return
        for entry in tmp.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _damage(out: Path, files: dict) -> str | None:
    """What differs between an entry's files and its record (None: every file matches its sha256)."""
    present = {f.relative_to(out).as_posix() for f in iter_files(out)} if out.is_dir() else set()
    if present != set(files):
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        return f"{'added' if extra else 'missing'}: {(extra or missing)[0]}"
    for rel, meta in files.items():
        path = out / rel
        if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            return f"{rel} differs from its sha256"
    return None


PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def code_digest(paths: tuple[str, ...], root: Path = PACKAGE) -> str | None:
    """sha256 of the source under each of `paths` (modules or folders of the mdeploy package,
    relative to `root`; `templates/...` is looked up beside the package too, where a checkout
    keeps it): a stage's key changes with the code it runs, so a cached entry made by other code
    is never taken for this code's. Python sources count in package folders (not compiled
    caches or editor files), every file in template folders. None: no paths."""
    if not paths:
        return None
    h = hashlib.sha256()
    for rel in sorted(set(paths)):
        path = root / rel
        if not path.exists() and rel.startswith("templates"):
            path = root.parent / rel
        if path.is_dir():
            pattern = "*" if rel.startswith("templates") else "*.py"
            files = sorted(f for f in path.rglob(pattern) if f.is_file() and "__pycache__" not in f.parts)
        else:
            files = [path]
        for f in files:
            h.update(f"{rel}/{f.relative_to(path).as_posix()}".encode() + b"\0")
            h.update(sha256_file(f).encode() if f.is_file() else b"missing")
    return h.hexdigest()


def stage_key(stage: Stage, dep_keys: dict[str, str]) -> str:
    return sha256_json(
        {
            "stage": stage.name,
            "code": stage.code_version,
            "source": code_digest(tuple(stage.code)),
            "mdeploy": __version__,
            "key": stage.key,
            "deps": dep_keys,
            "tools": {t: tool_version(t) for t in stage.tools},
        }
    )


@dataclass(frozen=True)
class StageEvent:
    """What a live progress view needs to know, besides the log lines (see `Runner`)."""

    kind: str  # "start" | "ran" | "cached" | "skipped"
    index: int  # 1-based position among the stages this build runs or needs
    total: int
    name: str
    describe: str = ""
    seconds: float = 0.0


@dataclass
class Outcome:
    """The result of running a list of stages."""

    records: dict[str, StageRecord] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class Runner:
    """Runs stages in order, taking each from the cache when its key is unchanged.

    `progress` gets one plain line per event (what logs and CI show). When it also has a
    `stage_event` method (the CLI's live view on a terminal), that is called with a
    `StageEvent` as each selected stage starts and ends, so the view needs not parse lines.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        use_cache: bool = True,
        only: set[str] | None = None,
        progress: Callable[[str], None] = lambda line: None,
    ):
        self.cache = cache
        self.use_cache = use_cache
        self.only = only
        self.progress = progress
        self._events = getattr(progress, "stage_event", None)

    def _event(self, kind: str, index: int, total: int, stage: Stage, seconds: float = 0.0) -> None:
        if self._events is not None:
            self._events(StageEvent(kind, index, total, stage.name, stage.describe, seconds))

    def run(self, stages: list[Stage]) -> Outcome:
        self.cache.prune_stale()
        by_name = {s.name: s for s in stages}
        needed = self._needed(stages, by_name)
        # --no-cache re-runs what was asked for; dependencies pulled in by --only come from the cache.
        forced = {s.name for s in stages if s.selected_by(self.only)} if self.only else set(by_name)
        keys: dict[str, str] = {}
        outcome = Outcome()
        # With --only, the lines and the count cover what was asked for and what it needs; the
        # stages left out are named once at the end, not one line each.
        total = len(needed)
        index = 0
        for stage in stages:
            if stage.name in needed:
                index += 1
            tag = f"[{index}/{total}] {stage.name}" if stage.name in needed else stage.name
            if any(d not in keys for d in stage.deps):
                outcome.skipped.append(stage.name)
                if stage.name in needed:
                    self.progress(f"{tag}: skipped (needs {', '.join(d for d in stage.deps if d not in keys)})")
                    self._event("skipped", index, total, stage)
                continue
            key = stage_key(stage, {d: keys[d] for d in stage.deps})
            reusable = self.use_cache or stage.name not in forced
            log = partial(_tagged, self.progress, tag)
            hit = self.cache.lookup(stage.name, key, log=log) if reusable else None
            selected = stage.name in needed
            if hit is not None:
                keys[stage.name] = key
                outcome.records[stage.name] = hit
                if selected:
                    self.progress(f"{tag}: cached")
                    self._event("cached", index, total, stage)
                continue
            if not selected:
                outcome.skipped.append(stage.name)
                continue
            self._event("start", index, total, stage)
            record = self._execute(stage, key, {d: outcome.records[d] for d in stage.deps}, tag)
            keys[stage.name] = key
            outcome.records[stage.name] = record
            self.progress(f"{tag}: done in {record.seconds:.1f}s")
            self._event("ran", index, total, stage, record.seconds)
        left = [s.name for s in stages if s.name not in needed and s.name not in outcome.records]
        if left:
            self.progress(f"not run (not selected by --only): {', '.join(left)}")
        return outcome

    def _needed(self, stages: list[Stage], by_name: dict[str, Stage]) -> set[str]:
        if not self.only:
            return set(by_name)
        needed = {s.name for s in stages if s.selected_by(self.only)}
        frontier = list(needed)
        while frontier:
            for dep in by_name[frontier.pop()].deps:
                if dep not in needed:
                    needed.add(dep)
                    frontier.append(dep)
        return needed

    def _execute(self, stage: Stage, key: str, deps: dict[str, StageRecord], tag: str) -> StageRecord:
        try:
            staging = self.cache.staging_dir()
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot write to the mdeploy cache at {self.cache.root}: {err.strerror or err}",
                hint="set MDEPLOY_CACHE_DIR to a writable folder",
            ) from err
        ctx = StageContext(stage, staging / "out", deps, lambda msg: self.progress(f"{tag}: {msg}"), key)
        self.progress(f"{tag}: {stage.describe} ...")  # announced once its staging folder exists
        start = time.perf_counter()
        try:
            data = stage.run(ctx) or {}
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.cache.store(stage, key, staging, data, time.perf_counter() - start)


def _tagged(progress: Callable[[str], None], tag: str, message: str) -> None:
    progress(f"{tag}: {message}")


def environment_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {"mdeploy": __version__, "python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}"}
    for dist in extra:
        versions[dist] = tool_version(dist)
    return versions
