"""What mdeploy ships is what it verified (issue 15, items 1-4): cache entries and the build
folder are checked by sha256, archives are unpacked per content, files a user put in a build
folder are kept, and builds sharing a cache or a build folder do not break each other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from mdeploy.build import build
from mdeploy.errors import ModelError
from mdeploy.fsutil import exclusive_lock, recover_dir, sha256_file, sha256_path
from mdeploy.importers.fetch import unpack
from mdeploy.pipeline import Cache, Runner, Stage
from tests.helpers import tiny_recipe


def flip(path: Path, offset: int = 16, count: int = 64) -> None:
    """Change `count` bytes in the middle of a file, keeping its size."""
    data = bytearray(path.read_bytes())
    start = min(offset, max(0, len(data) - count))
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def statuses(result) -> dict[str, str]:
    return {name: rec.status for name, rec in result.outcome.records.items()}


def shipped_matches_manifest(build_dir: Path) -> None:
    manifest = json.loads((build_dir / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        assert sha256_path(build_dir / art["path"]) == art["sha256"], art["id"]


def two_stages(calls: list[str], text: str = "hello") -> list[Stage]:
    def first(ctx):
        calls.append("first")
        (ctx.out / "first.txt").write_text(text)
        return {}

    def second(ctx):
        calls.append("second")
        (ctx.out / "second.txt").write_text((ctx.dep("first").out / "first.txt").read_text() + "!")
        return {}

    return [Stage("first", "write", first, key={"text": text}), Stage("second", "append", second, key={}, deps=("first",))]


# ------------------------------------------------------------------ 1. verified cache and build folder


def test_same_size_damage_in_a_cache_entry_is_found_and_the_stage_reruns(tmp_path):
    cache = Cache(tmp_path / "cache")
    with cache:
        out = Runner(cache).run(two_stages([]))
    target = out.records["first"].out / "first.txt"
    target.write_text("HELLO")  # same size: the old size check passed it as "cached"
    calls, lines = [], []
    with cache:
        again = Runner(cache, progress=lines.append).run(two_stages(calls))
    assert calls == ["first"]  # same key, damaged content: run again (its dependant's key is unchanged)
    assert (again.records["first"].out / "first.txt").read_text() == "hello"
    assert any(line.startswith("[1/2] first: cached entry is damaged (first.txt differs from its sha256)") for line in lines), (
        lines
    )


def test_a_file_added_to_a_cache_entry_is_damage_too(tmp_path):
    cache = Cache(tmp_path / "cache")
    with cache:
        out = Runner(cache).run(two_stages([]))
    (out.records["first"].out / "extra.bin").write_bytes(b"would be shipped")
    calls, lines = [], []
    with cache:
        Runner(cache, progress=lines.append).run(two_stages(calls))
    assert calls == ["first"]
    assert any("damaged (added: extra.bin)" in line for line in lines), lines


def test_corrupted_cached_tflite_is_rebuilt_not_shipped(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    first = build(load(path), out_root=tmp_path / "build")
    entry = first.outcome.records["tflite/fp32"].out / "tflite" / "tiny_fp32.tflite"
    good = sha256_file(entry)
    flip(entry)
    lines: list[str] = []
    result = build(load(path), out_root=tmp_path / "fresh", progress=lines.append)  # assembled from the cache
    assert statuses(result)["tflite/fp32"] == "ran"
    assert any(
        "tflite/fp32: cached entry is damaged (tflite/tiny_fp32.tflite differs from its sha256); discarded" in line
        for line in lines
    ), lines
    shipped = tmp_path / "fresh" / "tiny" / "tflite" / "tiny_fp32.tflite"
    assert sha256_file(shipped) == good
    shipped_matches_manifest(tmp_path / "fresh" / "tiny")


def test_same_size_edit_in_the_build_folder_is_reassembled(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    build(load(path), out_root=tmp_path / "build")
    out = tmp_path / "build" / "tiny"
    shipped = out / "tflite" / "tiny_fp32.tflite"
    good = sha256_file(shipped)
    flip(shipped)
    result = build(load(path), out_root=tmp_path / "build")
    assert result.written == "assembled"  # was "unchanged": sizes matched
    assert set(statuses(result).values()) == {"cached"}
    assert sha256_file(shipped) == good
    shipped_matches_manifest(out)


def load(path, overrides=()):
    from mdeploy.recipe import load_recipe

    return load_recipe(path, list(overrides))


# ------------------------------------------------------------------ 2. archives unpacked per content


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_changed_archive_is_unpacked_again_and_nothing_is_written_beside_it(tmp_path):
    archive = _zip(tmp_path / "m.zip", {"exported/saved_model.pb": b"old"})
    root = unpack(archive, cache_root=tmp_path / "cache")
    assert (root / "saved_model.pb").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "m.zip"]  # no m.zip.d beside it
    _zip(archive, {"exported/saved_model.pb": b"new"})
    again = unpack(archive, cache_root=tmp_path / "cache")
    assert (again / "saved_model.pb").read_bytes() == b"new"
    assert again != root
    assert again.parent.name == sha256_file(archive)


def test_local_zip_import_follows_the_archive(tmp_path, tiny_models):
    archive = tmp_path / "local_sm.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", tiny_models["saved_model"].parent, tiny_models["saved_model"].name)
    models = {"saved_model": archive}
    path = tiny_recipe(tmp_path, models, fmt="saved_model")
    first = build(load(path), out_root=tmp_path / "build")
    assert [g.status for g in first.gates if g.gate == "parity"] == ["passed"]

    _zip(archive, {"tiny_saved_model/saved_model.pb": b"not a SavedModel"})  # a new, broken archive
    with pytest.raises(ModelError):
        build(load(path), out_root=tmp_path / "build")  # was: the old unpacked model, exit 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("local_sm")) == ["local_sm.zip"]


# ------------------------------------------------------------------ 3. a user's files in the build folder


def test_files_a_user_put_in_the_build_folder_are_kept(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    build(load(path), out_root=tmp_path / "build")
    out = tmp_path / "build" / "tiny"
    (out / "NOTES.txt").write_text("my notes")
    (out / "mine" / "deep").mkdir(parents=True)
    (out / "mine" / "deep" / "data.csv").write_text("a,b\n")
    (out / "scratch").mkdir()
    (out / "tflite" / "README.md").write_text("which file goes where")
    (out / "link").symlink_to("NOTES.txt")

    result = build(load(path, ["export.tflite.variants=[fp16]"]), out_root=tmp_path / "build")
    assert result.written == "assembled"
    assert (out / "NOTES.txt").read_text() == "my notes"
    assert (out / "mine" / "deep" / "data.csv").read_text() == "a,b\n"
    assert (out / "scratch").is_dir()
    assert (out / "tflite" / "README.md").read_text() == "which file goes where"
    assert (out / "link").is_symlink() and os.readlink(out / "link") == "NOTES.txt"
    # What mdeploy wrote for the old recipe is not kept: fp32 is no longer built.
    assert sorted(p.name for p in (out / "tflite").iterdir()) == ["README.md", "tiny_fp16.tflite"]
    shipped_matches_manifest(out)

    flip(out / "tflite" / "tiny_fp16.tflite")  # re-assembled again: still kept
    assert build(load(path, ["export.tflite.variants=[fp16]"]), out_root=tmp_path / "build").written == "assembled"
    assert (out / "NOTES.txt").read_text() == "my notes"


# ------------------------------------------------------------------ 4. builds at once


def test_recover_dir_only_cleans_up_after_processes_that_are_gone(tmp_path):
    final = tmp_path / "tiny"
    dead = _dead_pid()
    live_tmp = tmp_path / f".tiny.tmp-{os.getpid()}-0123abcd"
    live_old = tmp_path / f".tiny.old-{os.getpid()}-4567abcd"  # another build between its two renames
    dead_tmp = tmp_path / f".tiny.tmp-{dead}-89abcdef"
    for folder in (live_tmp, live_old, dead_tmp):
        folder.mkdir()
    recover_dir(final)
    assert live_tmp.is_dir() and live_old.is_dir()
    assert not dead_tmp.exists()
    assert not final.exists()  # a live build's swap is not undone under it


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_entry_another_build_uses_is_not_swapped_under_it(tmp_path):
    root = tmp_path / "cache"
    first = Cache(root)
    used = Runner(first).run(two_stages([])).records["first"]
    inode = (used.out / "first.txt").stat().st_ino

    other = Cache(root)  # a second build with --no-cache while the first still reads the entry
    calls: list[str] = []
    redone = Runner(other, use_cache=False).run(two_stages(calls)).records
    assert calls == ["first", "second"]
    assert (used.out / "first.txt").stat().st_ino == inode  # the first build's files stay put
    assert redone["first"].dir.parent == root / "tmp"  # the second keeps its result to itself
    assert (redone["second"].out / "second.txt").read_text() == "hello!"
    other.release()
    assert not redone["first"].dir.exists()
    first.release()

    with Cache(root) as third:  # nobody holds it now: --no-cache replaces the entry
        again = Runner(third, use_cache=False).run(two_stages([])).records["first"]
        assert again.dir == used.dir and (again.out / "first.txt").stat().st_ino != inode


def test_exclusive_lock_waits_says_so_once_and_cleans_up(tmp_path):
    lock = tmp_path / "out" / ".tiny.lock"
    said: list[str] = []
    got = threading.Event()

    def second():
        with exclusive_lock(lock, on_wait=lambda: said.append("waiting")):
            got.set()

    with exclusive_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert not got.is_set()
    thread.join(10)
    assert got.is_set() and said == ["waiting"]
    assert not (tmp_path / "out").exists()  # the lock file and the folder made for it are gone


@pytest.mark.slow
def test_two_no_cache_builds_at_once_both_succeed(tmp_path, tiny_models):
    """Builds started a second apart, 3 trials: a second build of the same folder waits for the
    first (and says so); a build of another folder from the same cache runs alongside, on
    entries the first is reading (before the locks, one of them failed nearly every trial:
    a SavedModel whose graph and variables came from two different runs, exit 70)."""
    path = tiny_recipe(tmp_path, tiny_models, extra="export: {tflite: {variants: [fp32, fp16]}}\n")
    cmd = [sys.executable, "-m", "mdeploy", "build", str(path), "--no-cache", "--out"]
    same, other = tmp_path / "build", tmp_path / "other"
    for trial in range(3):
        procs = [
            subprocess.Popen([*cmd, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for out in _one_second_apart(same, same, other)
        ]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], (trial, errors)
        waits = [line for line in errors[1].splitlines() if line.startswith("waiting for another build")]
        assert waits == [f"waiting for another build of {same / 'tiny'} to finish ..."], errors[1]
        assert not any("waiting" in line for line in errors[2].splitlines())
        for out in (same, other):
            shipped_matches_manifest(out / "tiny")
            assert sorted(p.name for p in out.iterdir()) == ["tiny"]  # no lock file or temporaries left
        assert not list((tmp_path / "mdeploy-cache" / "tmp").iterdir())


def _one_second_apart(first, *then):
    yield first
    time.sleep(1.0)
    yield from then
