"""The real adb server from the adbutils wheel, started loopback-only and quiet for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A free loopback port outside 5555-5585 (which adb probes as emulator consoles)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 5555 <= port <= 5585:
            return port


class AdbServer:
    """`adb -P PORT nodaemon server` with mDNS, USB and emulator scanning off, keys in `home`."""

    def __init__(self, home: Path, port: int | None = None):
        import adbutils

        self.adb = adbutils.adb_path()
        self.home = Path(home)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.home / "adb-server.log"

    @property
    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            ADB_MDNS="0",
            ADB_EMU="0",
            ADB_USB="0",
            HOME=str(self.home),
            ANDROID_USER_HOME=str(self.home / ".android"),
            ANDROID_ADB_SERVER_PORT=str(self.port),
        )

    def start(self) -> AdbServer:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([self.adb, "-P", str(self.port), "nodaemon", "server"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"adb server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("adb server did not start listening")

    def run(self, *args: str, timeout: float = 20) -> str:
        proc = subprocess.run([self.adb, "-P", str(self.port), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        return proc.stdout + proc.stderr

    def state(self, serial: str) -> str | None:
        for line in self.run("devices").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == serial:
                return parts[1]
        return None

    def connect(self, serial: str, wait_for: str | None = "device", timeout: float = 15) -> str:
        out = self.run("connect", serial)
        if wait_for:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if self.state(serial) == wait_for:
                    return out
                time.sleep(0.1)
            raise RuntimeError(f"{serial} did not become {wait_for!r} (now {self.state(serial)!r}); adb said: {out}")
        return out

    def disconnect(self, serial: str) -> str:
        return self.run("disconnect", serial)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
