"""`mdeploy push` and `mdeploy bench` end to end: real adb server, emulated phones, a real build.

The phone's `benchmark_model` is the stand-in of tests/emulator (it runs the .tflite with
LiteRT inside the device's sandbox and prints the real tool's format), so command lines,
transfers, parsing, statistics and result files are all exercised for real.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mdeploy.devices.android import REMOTE_ROOT
from mdeploy.fsutil import sha256_file
from tests.devices.conftest import write_profiles
from tests.helpers import tiny_recipe


@pytest.fixture(scope="module")
def tiny_build(tiny_models, tmp_path_factory):
    """A real build of the tiny model: tflite fp32 + fp16 and onnx."""
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    folder = tmp_path_factory.mktemp("bench-build")
    recipe = tiny_recipe(folder, tiny_models, extra="export:\n  tflite: {variants: [fp32, fp16]}\n  onnx: {opset: 17}\n  mace: {runtime: cpu+gpu}\n")
    result = build(load_recipe(recipe), out_root=folder / "build", cache=Cache(folder / "cache"))
    assert not result.failed_gates
    return recipe, folder / "build"


@pytest.fixture
def build_copy(tiny_build, tmp_path):
    """A private copy of the build (benchmarks write into it)."""
    recipe, build_root = tiny_build
    shutil.copytree(build_root, tmp_path / "build")
    return recipe, tmp_path / "build"


def _on_device(phone, remote: str):
    return phone.fs / remote.lstrip("/")


# ---------------------------------------------------------------------------- push


def test_push_is_verified_content_addressed_and_skips_known_files(cli, adb_env, phone, build_copy):
    recipe, build_root = build_copy
    result = cli("push", recipe, "--device", phone.serial, "--out", build_root, "--artifact", "tflite/fp16", "--json")
    assert result.exit_code == 0, result.output
    (device,) = json.loads(result.stdout)["devices"]
    (pushed,) = device["files"]
    local = build_root / "tiny" / "tflite" / "tiny_fp16.tflite"
    sha = sha256_file(local)
    assert pushed["remote"] == f"{REMOTE_ROOT}/{sha[:16]}/tiny_fp16.tflite" and not pushed["skipped"]
    assert _on_device(phone, pushed["remote"]).read_bytes() == local.read_bytes()
    assert not [p for p in _on_device(phone, pushed["remote"]).parent.iterdir() if ".part-" in p.name]
    commands = " ".join(phone.commands)
    assert "sha256sum" in commands and "mv -f" in commands

    again = cli("push", recipe, "--device", phone.serial, "--out", build_root, "--artifact", "tflite/fp16", "--json")
    assert json.loads(again.stdout)["devices"][0]["files"][0]["skipped"] is True


def test_push_cut_short_leaves_no_file_under_its_name_and_a_retry_succeeds(cli, adb_env, phone, tmp_path):
    big = tmp_path / "big model's copy.tflite"  # a quote and spaces in the name: quoted and sanitized
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    phone.faults.drop_after_bytes = 1024 * 1024
    cut = cli("push", big, "--device", phone.serial)
    assert cut.exit_code == 3, cut.output
    assert "lost the connection" in cut.output and phone.serial in cut.output
    sha = sha256_file(big)
    final = _on_device(phone, f"{REMOTE_ROOT}/{sha[:16]}/big_model_s_copy.tflite")
    assert not final.exists()

    retry = cli("push", big, "--device", phone.serial, "--json")
    assert retry.exit_code == 0, retry.output
    assert final.read_bytes() == big.read_bytes()
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # the partial copy was cleaned up


def test_stalled_device_times_out_with_a_clear_message(cli, adb_env, phone, tmp_path, monkeypatch):
    monkeypatch.setenv("MDEPLOY_DEVICE_TIMEOUT", "2")
    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(b"x" * 1000)
    phone.faults.stall = True
    result = cli("push", artifact, "--device", phone.serial)
    assert result.exit_code == 3
    assert "stopped answering" in result.output and "2 s" in result.output


def test_push_to_several_devices_reports_the_failing_one(cli, adb_env, make_phone, tmp_path):
    good = make_phone("good")
    bad = make_phone("bad")
    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(os.urandom(2 * 1024 * 1024))
    bad.faults.drop_after_bytes = 256 * 1024
    result = cli("push", artifact, "--device", good.serial, "--device", bad.serial, "--json")
    assert result.exit_code == 3
    devices = {d["device"]: d for d in json.loads(result.stdout)["devices"]}
    assert devices[good.serial]["ok"] and devices[good.serial]["files"][0]["size"] == 2 * 1024 * 1024
    assert not devices[bad.serial]["ok"] and "lost the connection" in devices[bad.serial]["error"]


# ---------------------------------------------------------------------------- bench on a phone


def test_bench_on_a_phone_records_statistics_and_state(cli, adb_env, phone, build_copy, benchmark_tool, tmp_path, monkeypatch):
    recipe, build_root = build_copy
    monkeypatch.chdir(tmp_path)
    write_profiles(tmp_path, f"""\
        devices:
          pixel:
            match: {{model: "Pixel 7"}}
            abi: arm64-v8a
            benchmark_binary: {benchmark_tool}
        """)
    result = cli("bench", recipe, "--device", "pixel", "--out", build_root, "--artifact", "tflite/fp32",
                 "--runs", "5", "--warmup", "2", "--trials", "3", "--threads", "1", "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    (device,) = json.loads(result.stdout)["devices"]
    assert device["info"]["model"] == "Pixel 7" and device["info"]["profile"] == "pixel"
    assert [r["threads"] for r in device["results"]] == [1, 2]
    first = device["results"][0]
    lat = first["latency"]
    assert len(first["trials"]) == 3 and lat["samples"] == 3 and lat["basis"] == "trial averages"
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["max_ms"]
    assert all(t["count"] == 5 for t in first["trials"])  # the tool ran exactly --runs timed invocations
    assert first["peak_memory_mb"] > 1
    assert first["state"]["before"]["cpu_governor"] == "schedutil" and first["state"]["before"]["battery_level"] == 87
    assert first["throttled"] == []
    ran = [c for c in phone.commands if "--graph=" in c]
    assert len(ran) == 6 and "--num_runs=5" in ran[0] and "--warmup_runs=2" in ran[0] and "--num_threads=2" in ran[-1]

    saved = json.loads((build_root / "tiny" / "bench" / "pixel.json").read_text())
    assert saved["results"][0]["sha256"] == sha256_file(build_root / "tiny" / "tflite" / "tiny_fp32.tflite")
    manifest = json.loads((build_root / "tiny" / "manifest.json").read_text())
    assert [r["threads"] for r in manifest["bench"]["pixel"]["results"]] == [1, 2]


def test_bench_warns_when_the_phone_throttles(cli, adb_env, phone, build_copy, benchmark_tool):
    recipe, build_root = build_copy
    (phone.fs / "data/local/tmp/.bench_heat").write_text("")
    result = cli("bench", recipe, "--device", phone.serial, "--benchmark-binary", benchmark_tool, "--out", build_root,
                 "--artifact", "tflite/fp32", "--runs", "3", "--trials", "2", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)["devices"][0]["results"]
    assert any("thermal status 2" in reason for reason in r["throttled"])
    assert any("temperature rose 15 C" in reason for reason in r["throttled"])
    text = cli("bench", recipe, "--device", phone.serial, "--benchmark-binary", benchmark_tool, "--out", build_root,
               "--artifact", "tflite/fp32", "--runs", "3", "--trials", "2")
    assert "throttled: thermal status 2" in text.output


@pytest.mark.parametrize("switch, message", [(".bench_crash", "killed by a signal"), (".bench_garbage", "no 'Inference timings in us' line")])
def test_broken_benchmark_tool_records_no_measurement(cli, adb_env, phone, build_copy, benchmark_tool, switch, message):
    recipe, build_root = build_copy
    (phone.fs / "data/local/tmp" / switch).write_text("")
    result = cli("bench", recipe, "--device", phone.serial, "--benchmark-binary", benchmark_tool, "--out", build_root,
                 "--artifact", "tflite/fp32", "--runs", "3", "--trials", "2", "--json")
    assert result.exit_code == 3, result.output
    (device,) = json.loads(result.stdout)["devices"]
    assert device["results"] == [] and message in device["failures"][0]["error"]
    assert not (build_root / "tiny" / "bench").exists()
    assert "bench" not in json.loads((build_root / "tiny" / "manifest.json").read_text())


def test_missing_or_wrong_benchmark_binary_is_bad_input(cli, adb_env, phone, build_copy, tmp_path, monkeypatch):
    recipe, build_root = build_copy
    missing = cli("bench", recipe, "--device", phone.serial, "--out", build_root)
    assert missing.exit_code == 2
    assert "no benchmark_model" in missing.output and "never downloads" in missing.output
    monkeypatch.chdir(tmp_path)
    elf = shutil.which("ls")
    write_profiles(tmp_path, f"devices:\n  pixel:\n    serial: {phone.serial}\n    abi: arm64-v8a\n    benchmark_binary: {elf}\n")
    wrong = cli("bench", recipe, "--device", "pixel", "--out", build_root)
    assert wrong.exit_code == 2 and "built for x86_64, but the device's ABI is arm64-v8a" in wrong.output
    assert phone.commands == []  # nothing ran on the phone


def test_one_failing_device_does_not_stop_the_others(cli, adb_env, make_phone, build_copy, benchmark_tool):
    recipe, build_root = build_copy
    good = make_phone("good")
    stalled = make_phone("stalled")
    stalled.faults.stall = True
    result = cli("bench", recipe, "--device", good.serial, "--device", stalled.serial, "--device", "host",
                 "--benchmark-binary", benchmark_tool, "--out", build_root, "--artifact", "tflite/fp32",
                 "--runs", "3", "--trials", "2", "--json")
    assert result.exit_code == 3
    devices = {d["device"]: d for d in json.loads(result.stdout)["devices"]}
    assert devices[good.serial]["ok"] and devices["host"]["ok"]
    assert not devices[stalled.serial]["ok"] and "stopped answering" in devices[stalled.serial]["error"]
    written = sorted(p.name for p in (build_root / "tiny" / "bench").iterdir())
    assert written == sorted(["host.json", good.serial.replace(":", "_") + ".json"])


def _stand_in(source: str, folder) -> str:
    import sys

    path = folder / source.replace(".py", "")
    body = (Path(__file__).resolve().parents[1] / "emulator" / source).read_text().split("\n", 1)[1]
    path.write_text(f"#!{os.path.abspath(sys.executable)}\n{body}")
    path.chmod(0o755)
    return str(path)


def test_bench_mace_with_the_users_mace_run_and_converted_model(cli, adb_env, phone, build_copy, tmp_path):
    """MACE's converter cannot run here: its output is stood in by the package's frozen graph
    (<tag>.pb) and an empty weights file (<tag>.data); the stand-in mace_run runs the graph."""
    recipe, build_root = build_copy
    converted = tmp_path / "mace_out"
    converted.mkdir()
    shutil.copy(build_root / "tiny" / "mace" / "tiny.pb", converted / "tiny.pb")
    (converted / "tiny.data").write_bytes(b"")
    mace_run = _stand_in("mace_run.py", tmp_path)
    missing = cli("bench", recipe, "--device", phone.serial, "--out", build_root, "--artifact", "mace", "--json")
    assert missing.exit_code == 3
    assert "mace_run" in json.loads(missing.stdout)["devices"][0]["failures"][0]["error"]

    result = cli("bench", recipe, "--device", phone.serial, "--out", build_root, "--artifact", "mace", "--mace-run", mace_run,
                 "--mace-model", converted, "--runs", "3", "--trials", "2", "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    (device,) = json.loads(result.stdout)["devices"]
    assert [(r["artifact"], r["delegate"], r["threads"]) for r in device["results"]] == [("mace", "mace-cpu", 2), ("mace", "mace-gpu", 2)]
    assert all(t["avg_ms"] > 0 for t in device["results"][0]["trials"])
    (command,) = {c for c in phone.commands if "--model_name=tiny" in c and "--device=CPU" in c}
    for flag in ("--input_node=image", "--input_shape=1,32,32,3", "--output_node=heatmaps", "--output_shape=1,16,16,14",
                 "--round=3", "--num_threads=2"):
        assert flag in command
    assert list((phone.fs / "data/local/tmp/mdeploy").glob("*/model_out_heatmaps"))  # mace_run wrote its output

    # A deployment file of the user's own is checked against the built graph before anything is pushed.
    import yaml

    config = yaml.safe_load((build_root / "tiny" / "mace" / "tiny.yml").read_text())
    config["models"]["tiny"]["subgraphs"][0]["output_shapes"] = ["1,32,32,14"]
    theirs = tmp_path / "theirs.yml"
    theirs.write_text(yaml.safe_dump(config))
    refused = cli("bench", recipe, "--device", phone.serial, "--out", build_root, "--artifact", "mace", "--mace-run", mace_run,
                  "--mace-model", converted, "--mace-config", theirs, "--json")
    assert refused.exit_code == 2
    assert "output_shapes: 1,32,32,14, but the graph's output heatmaps is 1,16,16,14" in refused.output


def test_a_users_deployment_file_names_the_converted_model(build_copy, tmp_path):
    """The model tag of a user's own (valid, matching) deployment file names the files MACE converted."""
    import yaml

    from mdeploy.devices.plan import check_deployment_file

    _, build_root = build_copy
    io = {"input": "image", "input_shape": [1, 32, 32, 3], "output": "heatmaps", "output_shape": [1, 16, 16, 14]}
    own = build_root / "tiny" / "mace" / "tiny.yml"
    assert check_deployment_file(own, io, "tiny") == "tiny"
    config = yaml.safe_load(own.read_text())
    config["models"] = {"their_tag": config["models"]["tiny"]}
    config["models"]["their_tag"]["model_file_path"] = "/elsewhere/model.pb"  # converted on another machine
    theirs = tmp_path / "theirs.yml"
    theirs.write_text(yaml.safe_dump(config))
    assert check_deployment_file(theirs, io, "tiny") == "their_tag"


# ---------------------------------------------------------------------------- host


def test_bench_on_the_host_measures_every_run(cli, build_copy):
    recipe, build_root = build_copy
    result = cli("bench", recipe, "--out", build_root, "--runs", "4", "--warmup", "1", "--trials", "2",
                 "--delegate", "xnnpack", "--delegate", "cpu", "--json")
    assert result.exit_code == 0, result.output
    (device,) = json.loads(result.stdout)["devices"]
    assert device["device"] == "host"
    seen = {(r["artifact"], r["delegate"]) for r in device["results"]}
    assert seen == {("tflite/fp32", "xnnpack"), ("tflite/fp32", "cpu"), ("tflite/fp16", "xnnpack"), ("tflite/fp16", "cpu"), ("onnx", "cpu")}
    r = device["results"][0]
    assert len(r["trials_ms"]) == 2 and all(len(t) == 4 for t in r["trials_ms"])
    assert r["latency"]["basis"] == "runs" and r["latency"]["samples"] == 8


def test_bench_limit_fails_with_exit_1(cli, build_copy):
    recipe, build_root = build_copy
    result = cli("bench", recipe, "--out", build_root, "--artifact", "tflite/fp32", "--runs", "2", "--trials", "1",
                 "--set", "bench.max_latency_ms.host=0.000001")
    assert result.exit_code == 1
    assert "over bench.max_latency_ms" in result.output and "host tflite/fp32" in result.output


def test_results_survive_a_rebuild_only_for_unchanged_artifacts(cli, build_copy):
    recipe, build_root = build_copy
    assert cli("bench", recipe, "--out", build_root, "--runs", "2", "--trials", "1", "--artifact", "tflite/fp32",
               "--artifact", "tflite/fp16").exit_code == 0
    rebuilt = cli("build", recipe, "--out", build_root, "--set", "export.tflite.variants=[fp32]")
    assert rebuilt.exit_code == 0, rebuilt.output
    saved = json.loads((build_root / "tiny" / "bench" / "host.json").read_text())
    assert [r["artifact"] for r in saved["results"]] == ["tflite/fp32"]
    manifest = json.loads((build_root / "tiny" / "manifest.json").read_text())
    assert [r["artifact"] for r in manifest["bench"]["host"]["results"]] == ["tflite/fp32"]


# ---------------------------------------------------------------------------- the bench step of mdeploy build


def test_build_with_bench_section_measures_gates_and_reuses(cli, build_copy):
    recipe, build_root = build_copy
    bench = "bench: {runs: 3, warmup: 1, trials: 2, artifacts: [tflite/fp32], max_latency_ms: {host: 0.000001}}\n"
    recipe.write_text(recipe.read_text() + bench)
    failed = cli("build", recipe, "--out", build_root, "--json")
    assert failed.exit_code == 1, failed.output
    summary = json.loads(failed.stdout)
    (gate,) = [g for g in summary["gates"] if g["gate"] == "bench"]
    assert gate["status"] == "failed" and gate["artifact"] == "tflite/fp32@host threads=1 xnnpack"
    manifest = json.loads((build_root / "tiny" / "manifest.json").read_text())
    assert manifest["gates"]["bench"]["results"][0]["status"] == "failed"
    assert summary["bench"]["measured"] == ["host"]

    recipe.write_text(recipe.read_text().replace("0.000001", "100000"))
    passed = cli("build", recipe, "--out", build_root)
    assert passed.exit_code == 0, passed.output
    assert "results reused for host" in passed.output and "passed" in passed.output
    remeasured = cli("build", recipe, "--out", build_root, "--no-cache", "--json")
    assert json.loads(remeasured.stdout)["bench"]["measured"] == ["host"]
