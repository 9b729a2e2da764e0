from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import PEFM_PB, VOLUMETRIC_TRAINING_RECIPE, save_all_formats, write

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own mdeploy cache; nothing leaks into ~/.cache."""
    monkeypatch.setenv("MDEPLOY_CACHE_DIR", str(tmp_path / "mdeploy-cache"))
    monkeypatch.delenv("MDEPLOY_DEBUG", raising=False)
    # The machine running the suite is often a CI runner (CI=true switches `build` to CI mode)
    # or has its own TF_CONFIG / user device profiles: tests that want those set them.
    for name in ("CI", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    # No test may reach (or start) an adb server on the machine's default port: unless a test
    # asks for the project's own server (tests/devices: adb_env), adb points at a loopback
    # address where nothing listens and which mdeploy never starts a server on.
    monkeypatch.setenv("ANDROID_ADB_SERVER_HOST", "127.0.0.2")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "9")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One tiny heatmap model (~2k parameters) saved as .keras, SavedModel and frozen .pb."""
    return save_all_formats(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def volumetric_training_build(tmp_path_factory):
    """The tiny LPSKI of tests/helpers.py VOLUMETRIC_TRAINING_RECIPE, trained and built into every
    format with its report, once per session (tests/families/test_volumetric_training.py and
    tests/report/test_skeletons3d.py read the same build)."""
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("train3d")
    recipe = load_recipe(write(root / "tiny3d.yaml", VOLUMETRIC_TRAINING_RECIPE))
    return build(recipe, out_root=root / "build", cache=Cache(root / "cache"))


@pytest.fixture(scope="session")
def pefm_cache(tmp_path_factory):
    """One stage cache for the builds of the PEFM release's shipped recipe (recipes/pefm_cpm.yaml,
    with --set overrides) in tests/importers/test_pefm.py, test_pefm_real.py and
    tests/cli/test_pose_cmds.py: a stage they share (the import, TFLite fp32 and its parity, ...)
    runs once. No test using it is about a cold build."""
    from mdeploy.pipeline import Cache

    return Cache(tmp_path_factory.mktemp("pefm-cache"))


@pytest.fixture
def pefm_pb() -> Path:
    if not PEFM_PB.is_file():
        pytest.skip(f"the PEFM reference model is not here ({PEFM_PB}): ../shared is absent in this checkout")
    return PEFM_PB


@pytest.fixture
def cli():
    """Invoke the CLI in-process (TensorFlow stays imported between tests)."""
    from typer.testing import CliRunner

    from mdeploy.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


# Session fixtures that take tens of seconds to build. When the suite runs on several workers
# (pytest-xdist, `make test`), every test file that uses one of them joins one group, and a
# group runs on one worker: each is built once, and each file's module fixtures too.
SHARED_SESSION_FIXTURES = ("pefm_cache", "volumetric_training_build", "report_build", "dots_model", "jvm_build", "thin_release")


@pytest.hookimpl(wrapper=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    if getattr(config.option, "loadgroup", False):  # an xdist worker of a --dist loadgroup run
        _group_for_workers(items)
    return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """On the controller: xdist marks a test's group by appending '@GROUP' to its id. A pytest
    release that ignores that (9.2 does) would spread each group over the workers, building
    every slow fixture once per worker; stop the run instead of letting it get slower unnoticed."""
    if node.config.getoption("dist", "no") == "loadgroup" and any("@" not in i.rsplit("::", 1)[-1] for i in ids):
        pytest.exit("pytest-xdist did not apply the test groups of tests/conftest.py (a pytest release it does "
                    "not support? pyproject.toml pins a pair that works)", returncode=4)


def _group_for_workers(items) -> None:
    """One xdist_group per test file, except that every file using one of SHARED_SESSION_FIXTURES
    (directly or through another fixture) joins the group of that fixture: a union of files and
    fixture names, whose root names the group."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.get(node, node) != node:
            node = parent[node]
        return node

    for item in items:
        file = item.nodeid.split("::")[0]
        for name in SHARED_SESSION_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                a, b = root(file), root(name)
                if a != b:
                    parent[a] = b
    for item in items:
        item.add_marker(pytest.mark.xdist_group(root(item.nodeid.split("::")[0])))
