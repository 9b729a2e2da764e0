"""Fixtures: the real adb server (from the adbutils wheel) and emulated phones registered with it.

No phone can be attached here, so a phone is `tests.emulator.EmulatedDevice`: adbd's side of
the ADB transport protocol on loopback, with a bubblewrap sandbox as its shell. Everything
between mdeploy and that device is real: adbutils, the adb server, the wire protocol.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.emulator import AdbServer, EmulatedDevice
from tests.emulator.device import python_binds

STAND_IN = Path(__file__).resolve().parents[1] / "emulator" / "benchmark_model.py"


@pytest.fixture(scope="session")
def adb_server(tmp_path_factory):
    server = AdbServer(tmp_path_factory.mktemp("adb-home")).start()
    yield server
    server.stop()


@pytest.fixture
def adb_env(adb_server, monkeypatch):
    """mdeploy (and adbutils) talk to the test's adb server, with short device timeouts."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    monkeypatch.delenv("ANDROID_ADB_SERVER_HOST", raising=False)
    monkeypatch.setenv("MDEPLOY_DEVICE_TIMEOUT", "5")
    return adb_server


@pytest.fixture
def make_phone(adb_server, tmp_path):
    """Start emulated phones (registered with the adb server); all are removed after the test."""
    started = []

    def make(name: str = "phone", *, connect: str | None = "device", **kwargs) -> EmulatedDevice:
        device = EmulatedDevice(tmp_path / name, extra_binds=python_binds(), **kwargs)
        device.start()
        started.append(device)
        if connect:
            adb_server.connect(device.serial, wait_for=connect)
        return device

    yield make
    for device in started:
        adb_server.disconnect(device.serial)
        device.stop()


@pytest.fixture
def phone(make_phone) -> EmulatedDevice:
    return make_phone()


@pytest.fixture(scope="session")
def benchmark_tool(tmp_path_factory) -> Path:
    """The stand-in benchmark_model with a shebang naming this Python (visible inside the device)."""
    path = tmp_path_factory.mktemp("tools") / "benchmark_model"
    body = STAND_IN.read_text().split("\n", 1)[1]
    path.write_text(f"#!{os.path.abspath(sys.executable)}\n{body}")
    path.chmod(0o755)
    return path


def write_profiles(folder: Path, text: str) -> Path:
    path = folder / "devices.yaml"
    path.write_text(textwrap.dedent(text))
    return path
