"""Stages and the cache, with small pure-Python stages (no framework needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdeploy.fsutil import digest_entries, recover_dir, sha256_file, sha256_path, swap_dir
from mdeploy.pipeline import Cache, Runner, Stage, stage_key


class Counter:
    def __init__(self):
        self.calls: list[str] = []


def make_stages(counter: Counter, text: str = "hello", suffix: str = "!") -> list[Stage]:
    def first(ctx):
        counter.calls.append("first")
        (ctx.out / "a").mkdir()
        (ctx.out / "a" / "first.txt").write_text(text)
        return {"artifacts": [{"id": "first", "path": "a/first.txt", "format": "txt"}]}

    def second(ctx):
        counter.calls.append("second")
        upstream = (ctx.dep("first").out / "a" / "first.txt").read_text()
        (ctx.out / "b.txt").write_text(upstream + suffix)
        return {"results": {"length": len(upstream + suffix)}}

    def third(ctx):
        counter.calls.append("third")
        (ctx.out / "c.txt").write_text("independent")
        return {}

    return [
        Stage("first", "write", first, key={"text": text}),
        Stage("second", "append", second, key={"suffix": suffix}, deps=("first",), groups=("late",)),
        Stage("third", "other", third, key={}, groups=("late",)),
    ]


def test_first_run_runs_everything_then_everything_is_cached(tmp_path):
    cache, counter = Cache(tmp_path / "cache"), Counter()
    out = Runner(cache).run(make_stages(counter))
    assert counter.calls == ["first", "second", "third"]
    assert {r.status for r in out.records.values()} == {"ran"}
    assert (out.records["second"].out / "b.txt").read_text() == "hello!"
    assert out.records["second"].results == {"length": 6}

    counter2 = Counter()
    out2 = Runner(cache).run(make_stages(counter2))
    assert counter2.calls == []
    assert {r.status for r in out2.records.values()} == {"cached"}


def test_changing_a_key_reruns_only_dependent_stages(tmp_path):
    cache = Cache(tmp_path / "cache")
    Runner(cache).run(make_stages(Counter()))
    counter = Counter()
    Runner(cache).run(make_stages(counter, suffix="?"))
    assert counter.calls == ["second"]
    counter = Counter()
    Runner(cache).run(make_stages(counter, text="bye", suffix="?"))
    assert counter.calls == ["first", "second"]  # a new upstream key changes the dependant's key


def test_tool_versions_enter_the_key():
    stage = Stage("s", "", lambda ctx: {}, key={}, tools=("numpy",))
    other = Stage("s", "", lambda ctx: {}, key={}, tools=("pydantic",))
    assert stage_key(stage, {}) != stage_key(other, {})
    assert stage_key(stage, {}) == stage_key(Stage("s", "", lambda ctx: {}, key={}, tools=("numpy",)), {})


def test_the_source_a_stage_runs_enters_its_key(tmp_path):
    """A stage names the mdeploy modules it runs; an edit to one of them (even a byte) changes
    the key, an edit elsewhere or to a compiled cache does not."""
    from mdeploy.pipeline import code_digest

    package = tmp_path / "pkg"
    (package / "importers" / "__pycache__").mkdir(parents=True)
    (package / "importers" / "folds.py").write_text("FOLD = True\n")
    (package / "importers" / "__pycache__" / "folds.cpython-311.pyc").write_bytes(b"compiled")
    (package / "report.py").write_text("TITLE = 'a'\n")
    (tmp_path / "templates" / "mace").mkdir(parents=True)  # beside the package, as in a checkout
    (tmp_path / "templates" / "mace" / "deployment.yml.j2").write_text("a\n")
    paths = ("importers", "templates/mace")
    before = code_digest(paths, package)
    (package / "report.py").write_text("TITLE = 'b'\n")
    (package / "importers" / "__pycache__" / "folds.cpython-311.pyc").write_bytes(b"recompiled")
    (package / "importers" / "folds.py.swp").write_bytes(b"editor")
    code_digest.cache_clear()
    assert code_digest(paths, package) == before
    (package / "importers" / "folds.py").write_text("FOLD = False\n")
    code_digest.cache_clear()
    changed = code_digest(paths, package)
    assert changed != before
    (tmp_path / "templates" / "mace" / "deployment.yml.j2").write_text("b\n")
    code_digest.cache_clear()
    assert code_digest(paths, package) not in (before, changed)
    assert code_digest((), package) is None

    stage = Stage("model", "", lambda ctx: {}, key={}, code=("importers",))
    assert stage_key(stage, {}) != stage_key(Stage("model", "", lambda ctx: {}, key={}, code=("exporters",)), {})
    assert stage_key(stage, {}) != stage_key(Stage("model", "", lambda ctx: {}, key={}), {})


def test_every_build_stage_names_the_code_it_runs(tmp_path):
    """Each stage a build plans (here the PEFM-style import with int8 and the quickstart's
    training) carries the modules it runs, and each of them exists in the package."""
    from mdeploy.build import STAGE_CODE, plan_build
    from mdeploy.pipeline import PACKAGE
    from mdeploy.recipe.loader import load_recipe

    for paths in STAGE_CODE.values():
        assert all((PACKAGE / p).exists() or (PACKAGE.parent / p).exists() for p in paths), paths
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "cpm_android.yaml")
    plan = plan_build(recipe, Cache(tmp_path / "cache"), tmp_path / "build")
    assert plan.stages and all(stage.code for stage in plan.stages), [s.name for s in plan.stages if not s.code]
    train = next(s for s in plan.stages if s.name == "train")
    assert "train" in train.code and "codegen" not in train.code


def test_no_cache_reruns_and_only_selects(tmp_path):
    cache = Cache(tmp_path / "cache")
    Runner(cache).run(make_stages(Counter()))
    counter = Counter()
    Runner(cache, use_cache=False).run(make_stages(counter))
    assert counter.calls == ["first", "second", "third"]
    counter = Counter()
    Runner(cache, use_cache=False, only={"second"}).run(make_stages(counter))
    assert counter.calls == ["second"]  # its dependency comes from the cache
    counter = Counter()
    Runner(cache, use_cache=False, only={"late"}).run(make_stages(counter))
    assert counter.calls == ["second", "third"]  # groups select several stages


def test_only_runs_missing_dependencies_and_skips_the_rest(tmp_path):
    cache, counter = Cache(tmp_path / "cache"), Counter()
    out = Runner(cache, only={"second"}).run(make_stages(counter))
    assert counter.calls == ["first", "second"]
    assert out.skipped == ["third"]


def test_failed_stage_leaves_no_cache_entry(tmp_path):
    cache = Cache(tmp_path / "cache")

    def boom(ctx):
        (ctx.out / "half.txt").write_text("partial")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        Runner(cache).run([Stage("boom", "", boom, key={})])
    assert not cache.stages.exists() or not any(cache.stages.iterdir())
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def test_staging_left_by_a_killed_process_is_pruned(tmp_path):
    cache = Cache(tmp_path / "cache")
    dead = cache.root / "tmp" / "999999999-0123abcd"
    dead.mkdir(parents=True)
    mine = cache.staging_dir()
    cache.prune_stale()
    assert not dead.exists() and mine.exists()


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    cache = Cache(tmp_path / "cache")
    out = Runner(cache).run(make_stages(Counter()))
    (out.records["first"].out / "a" / "first.txt").write_text("truncated")  # size changes
    counter = Counter()
    Runner(cache).run(make_stages(counter))
    assert counter.calls == ["first"]  # same key, damaged files: run again


def test_record_lists_every_file_with_hash(tmp_path):
    cache = Cache(tmp_path / "cache")
    rec = Runner(cache).run(make_stages(Counter())).records["first"]
    data = json.loads((rec.dir / "record.json").read_text())
    meta = data["files"]["a/first.txt"]
    assert meta["sha256"] == sha256_file(rec.out / "a" / "first.txt")
    assert meta["size"] == 5
    assert data["key"] == rec.key


def test_folder_digest_matches_entry_digest(tmp_path):
    folder = tmp_path / "f"
    (folder / "x").mkdir(parents=True)
    (folder / "x" / "1.bin").write_bytes(b"one")
    (folder / "2.bin").write_bytes(b"two")
    entries = [(p.relative_to(folder).as_posix(), sha256_file(p)) for p in folder.rglob("*") if p.is_file()]
    assert sha256_path(folder) == digest_entries(entries)
    (folder / "2.bin").write_bytes(b"tw0")
    assert sha256_path(folder) != digest_entries(entries)


def test_swap_and_recover(tmp_path):
    final = tmp_path / "build"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "new.txt").write_text("new")
    swap_dir(new, final)
    assert (final / "new.txt").exists() and not (final / "old.txt").exists()
    assert not any(p.name.startswith(".build.old") for p in tmp_path.iterdir())

    # A swap cut between its two renames: the old folder is aside, the final name is free.
    aside = tmp_path / ".build.old-deadbeef"
    final.rename(aside)
    (tmp_path / ".build.tmp-cafecafe").mkdir()
    recover_dir(final)
    assert (final / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_cache_root_from_environment(monkeypatch, tmp_path):
    from mdeploy.pipeline import cache_root

    monkeypatch.setenv("MDEPLOY_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MDEPLOY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mdeploy"
