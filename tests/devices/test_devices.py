"""`mdeploy devices` and device resolution, against the real adb server and emulated phones."""

from __future__ import annotations

import json

import pytest

from mdeploy.devices.profiles import load_profiles
from mdeploy.errors import RecipeError
from tests.devices.conftest import write_profiles
from tests.emulator import Faults


def test_devices_lists_phone_state_and_matching_profile(cli, adb_env, make_phone, tmp_path, monkeypatch):
    phone = make_phone("pixel")
    other = make_phone("galaxy", props={"ro.product.model": "SM-S918B", "ro.product.manufacturer": "samsung",
                                        "ro.soc.manufacturer": "Qualcomm", "ro.soc.model": "SM8550"}, battery=(42, 355))
    monkeypatch.chdir(tmp_path)
    write_profiles(tmp_path, """\
        devices:
          pixel:
            match: {model: "Pixel 7*"}
            abi: arm64-v8a
            notes: team phone
          galaxy:
            serial: %s
          tablet:
            match: {model: "SM-X*"}
        """ % other.serial)
    result = cli("devices", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_serial = {d["serial"]: d for d in data["devices"]}
    p, g = by_serial[phone.serial], by_serial[other.serial]
    assert (p["state"], p["model"], p["android"], p["abi"], p["soc"]) == ("device", "Pixel 7", "14", "arm64-v8a", "Google GS201")
    assert p["battery_level"] == 87 and p["battery_temp_c"] == pytest.approx(31.2)
    assert p["profiles"] == ["pixel"] and g["profiles"] == ["galaxy"]
    assert (g["model"], g["soc"], g["battery_level"]) == ("SM-S918B", "Qualcomm SM8550", 42)
    assert data["profiles_not_connected"] == ["tablet"]
    assert data["host"]["serial"] == "host"

    text = cli("devices")
    assert text.exit_code == 0
    assert "Pixel 7" in text.output and "profiles with no connected device: tablet" in text.output


def test_unauthorized_device_gets_an_actionable_message(cli, adb_env, make_phone, tmp_path):
    phone = make_phone("locked", faults=Faults(unauthorized=True), connect="unauthorized")
    listing = json.loads(cli("devices", "--json").stdout)
    (entry,) = [d for d in listing["devices"] if d["serial"] == phone.serial]
    assert entry["state"] == "unauthorized" and "Allow USB debugging" in entry["hint"]
    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(b"x" * 100)
    result = cli("push", artifact, "--device", phone.serial)
    assert result.exit_code == 3
    assert f"{phone.serial} is unauthorized" in result.output and "Allow USB debugging" in result.output
    assert "Traceback" not in result.output


def test_unknown_device_names_are_explained(cli, adb_env, phone, tmp_path):
    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(b"x" * 100)
    missing = cli("push", artifact, "--device", "0123456789AB")
    assert missing.exit_code == 3
    assert "0123456789AB is not connected" in missing.output and phone.serial in missing.output
    bad = cli("push", artifact, "--device", "a;rm -rf /")
    assert bad.exit_code == 2 and "neither a profile" in bad.output


def test_no_adb_server_is_an_environment_error(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("ANDROID_ADB_SERVER_HOST", "127.0.0.2")  # loopback, nothing listens, not ours to start
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "5999")
    result = cli("devices")
    assert result.exit_code == 3
    assert "no adb server answers at 127.0.0.2:5999" in result.output


def test_profile_file_errors_point_at_the_line(tmp_path):
    write_profiles(tmp_path, """\
        devices:
          pixel:
            serail: ABC123
          host:
            serial: abc
        """)
    with pytest.raises(RecipeError) as info:
        load_profiles([tmp_path])
    rendered = info.value.render()
    assert "devices.yaml:3:5: devices.pixel.serail: unknown key 'serail' (did you mean 'serial'?)" in rendered.replace(str(tmp_path) + "/", "")


def test_host_cannot_be_redefined(tmp_path):
    from mdeploy.errors import InputError

    write_profiles(tmp_path, "devices:\n  host:\n    serial: abc\n")
    with pytest.raises(InputError, match="'host' is built in"):
        load_profiles([tmp_path])


def test_profiles_merge_user_and_project(tmp_path, monkeypatch):
    user = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user))
    (user / "mdeploy").mkdir(parents=True)
    write_profiles(user / "mdeploy", "devices:\n  pixel:\n    serial: USER1\n  mine:\n    serial: MINE1\n")
    project = tmp_path / "project"
    project.mkdir()
    write_profiles(project, "devices:\n  pixel:\n    serial: PROJ1\n    benchmark_binary: tools/bm\n")
    profiles = load_profiles([project])
    assert profiles.get("pixel").serial == "PROJ1"
    assert profiles.get("mine").serial == "MINE1"
    assert profiles.get("pixel").benchmark_binary == project / "tools" / "bm"
    assert profiles.get("host").is_host


def test_devices_with_no_phone_says_so_with_the_push_hint(cli, adb_env):
    from mdeploy.devices.targets import NO_PHONE_HINT

    result = cli("devices")
    assert result.exit_code == 0, result.output
    assert f"no phone found: {NO_PHONE_HINT}" in result.stdout
    assert result.stdout.splitlines()[2].split()[0] == "host"  # host is always a device
