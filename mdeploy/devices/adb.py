"""Phones through the adb server (adbutils), with a timeout on every call and clear failures.

The server: the one at ANDROID_ADB_SERVER_HOST:ANDROID_ADB_SERVER_PORT (default
127.0.0.1:5037) when it answers; otherwise, for a local address, the adb binary shipped in
the adbutils wheel is started on that port. mdeploy never stops a server.

Every adb call has a timeout: socket operations (`timeout`, default 20 s) and whole shell
commands (the caller's). A device that stops answering ends the command with a message
naming it, exit code 3. Shell commands are built from argument lists and quoted; serials
and device paths are validated before use.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mdeploy.devices.profiles import check_serial
from mdeploy.errors import DeviceError, InputError

DEFAULT_TIMEOUT = 20.0  # seconds; MDEPLOY_DEVICE_TIMEOUT overrides
LOCAL = ("127.0.0.1", "localhost", "::1")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/+\-]+$")
_NETWORK_SERIAL = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$")

STATE_HELP = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt (tick 'Always allow from this "
    "computer'); no prompt? revoke USB debugging authorizations in Developer options, then reconnect the cable",
    "offline": "the phone is attached but not answering: reconnect the cable (or `adb reconnect`); a network device "
    "must be reachable and have wireless debugging on",
    "no permissions": "the adb server may not open this USB device: add a udev rule for the phone's vendor ID "
    "(see Android's 'Run apps on a hardware device' guide)",
    "authorizing": "the phone is still deciding whether to trust this computer: unlock it and accept the prompt",
    "connecting": "adb is still connecting to the phone: try again in a few seconds",
}


def check_remote_path(path: str) -> str:
    """Device paths mdeploy builds: absolute, letters, digits and . _ / + - only."""
    if not _REMOTE_PATH.fullmatch(path) or "/../" in path or path.endswith("/.."):
        raise InputError(f"refusing to use device path {path!r} (only letters, digits and . _ / + - are allowed)")
    return path


def quote(argv: list[str]) -> str:
    """One shell command line from arguments (Android's sh reads POSIX single quotes)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def server_address() -> tuple[str, int]:
    host = os.environ.get("ANDROID_ADB_SERVER_HOST") or "127.0.0.1"
    raw = os.environ.get("ANDROID_ADB_SERVER_PORT") or "5037"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise DeviceError(f"ANDROID_ADB_SERVER_PORT={raw!r} is not a port number")
    return host, int(raw)


def _listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Server:
    host: str
    port: int
    started: bool  # mdeploy started it (it is left running, as adb itself does)
    timeout: float = DEFAULT_TIMEOUT

    def client(self):
        import adbutils

        return adbutils.AdbClient(host=self.host, port=self.port, socket_timeout=self.timeout)


def device_timeout() -> float:
    raw = os.environ.get("MDEPLOY_DEVICE_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise DeviceError(f"MDEPLOY_DEVICE_TIMEOUT={raw!r} is not a positive number of seconds")
    return value


def connect_server(timeout: float | None = None, start: bool = True) -> Server:
    """The running adb server, or (local address only) one started from adbutils' adb binary."""
    timeout = timeout or device_timeout()
    host, port = server_address()
    if _listening(host, port):
        return Server(host, port, False, timeout)
    if not start or host not in LOCAL:
        raise DeviceError(
            f"no adb server answers at {host}:{port}",
            hint="start one (`adb start-server`), or unset ANDROID_ADB_SERVER_HOST/PORT to let mdeploy start one locally",
        )
    try:
        import adbutils

        adb = adbutils.adb_path()
    except Exception as err:  # adbutils raises plain exceptions when its binary is missing
        raise DeviceError(f"no adb binary to start a server with: {err}", hint="install platform-tools, or reinstall adbutils") from None
    try:
        proc = subprocess.run([adb, "-P", str(port), "start-server"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DeviceError(f"could not start the adb server ({adb}): {err}") from None
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if _listening(host, port):
            return Server(host, port, True, timeout)
        time.sleep(0.1)
    detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    raise DeviceError(f"the adb server did not come up on port {port}: {detail[0]}")


@contextmanager
def device_errors(serial: str, doing: str, timeout: float) -> Iterator[None]:
    """adbutils/socket failures -> one DeviceError naming the device and what was going on."""
    from adbutils.errors import AdbConnectionError, AdbError, AdbTimeout

    try:
        yield
    except (AdbTimeout, socket.timeout, TimeoutError):
        raise DeviceError(
            f"{serial} stopped answering while {doing} (no reply within {timeout:g} s)",
            hint="check the cable or network and that the phone is awake; `mdeploy devices` shows its state",
        ) from None
    except (AdbConnectionError, ConnectionError, BrokenPipeError, EOFError, OSError) as err:
        raise DeviceError(f"lost the connection to {serial} while {doing}: {err or type(err).__name__}",
                          hint="reconnect the phone and run the command again") from None
    except AdbError as err:
        message = str(err).strip()
        if not message or "closed" in message.lower() or "eof" in message.lower():
            raise DeviceError(f"lost the connection to {serial} while {doing}",
                              hint="reconnect the phone and run the command again") from None
        if "not found" in message or "offline" in message or "unauthorized" in message:
            raise DeviceError(f"{serial} is not available while {doing}: {message}",
                              hint="`mdeploy devices` shows which phones are connected") from None
        raise DeviceError(f"adb failed while {doing} on {serial}: {message}") from None


@dataclass
class ShellResult:
    command: str
    code: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 6) -> str:
        text = (self.stderr.strip() + "\n" + self.stdout.strip()).strip()
        return "\n".join(text.splitlines()[-lines:])


class Phone:
    """One device in the `device` state, reached through the adb server."""

    def __init__(self, server: Server, serial: str):
        self.server = server
        self.serial = check_serial(serial)
        self.timeout = server.timeout
        client = server.client()
        with device_errors(serial, "opening the device", self.timeout):
            self.device = client.device(serial)
            self.features = set(self.device.get_features().split(","))

    # ------------------------------------------------------------------ shell

    def shell(self, argv: list[str] | str, *, timeout: float | None = None, check: bool = False, doing: str | None = None) -> ShellResult:
        """Run a command (argument list, quoted here; or a prepared line); exit code always known."""
        command = argv if isinstance(argv, str) else quote(argv)
        limit = timeout or self.timeout
        with device_errors(self.serial, doing or f"running `{command[:60]}`", limit):
            if "shell_v2" in self.features:
                r = self.device.shell2(command, timeout=limit, encoding=None, v2=True)
                result = ShellResult(command, r.returncode, _text(r.stdout), _text(r.stderr))
            else:
                r = self.device.shell2(command, timeout=limit, encoding=None)
                result = ShellResult(command, r.returncode, _text(r.output), "")
        if check and result.code != 0:
            raise DeviceError(f"`{command[:80]}` failed on {self.serial} (exit {result.code}): {result.tail(3)}")
        return result

    def getprops(self) -> dict[str, str]:
        out = self.shell(["getprop"], doing="reading its properties").stdout
        return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", out, re.MULTILINE))

    # ------------------------------------------------------------------ files

    def sha256(self, path: str) -> str | None:
        """sha256 of a device file, or None when it does not exist."""
        check_remote_path(path)
        r = self.shell(f"if [ -f {shlex.quote(path)} ]; then sha256sum {shlex.quote(path)}; fi", doing=f"hashing {path}")
        match = re.match(r"^([0-9a-f]{64})\b", r.stdout.strip())
        return match.group(1) if match else None

    def send_file(self, local: Path, remote: str, *, mode: int = 0o644, progress: Callable[[int], None] | None = None) -> int:
        """Write `local` to `remote` over the sync protocol (every socket operation times out)."""
        check_remote_path(remote)
        total = 0
        with device_errors(self.serial, f"pushing {local.name}", self.timeout):
            conn = self.device.open_transport(timeout=self.timeout)
            try:
                conn.send_command("sync:")
                conn.check_okay()
                spec = f"{remote},{0o100000 | mode}".encode()
                conn.conn.sendall(b"SEND" + struct.pack("<I", len(spec)) + spec)
                with open(local, "rb") as fh:
                    for chunk in iter(lambda: fh.read(64 * 1024), b""):
                        conn.conn.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                        total += len(chunk)
                        if progress:
                            progress(total)
                conn.conn.sendall(b"DONE" + struct.pack("<I", int(time.time())))
                status = conn.read_exact(8)
                if status[:4] == b"FAIL":
                    length = struct.unpack("<I", status[4:])[0]
                    raise DeviceError(f"{self.serial} refused {remote}: {conn.read_exact(length).decode('utf-8', 'replace')}")
                if status[:4] != b"OKAY":
                    raise DeviceError(f"{self.serial} answered {status[:4]!r} to a file transfer")
            finally:
                conn.close()
        return total


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else str(data)


def is_network_serial(serial: str) -> bool:
    return bool(_NETWORK_SERIAL.fullmatch(serial))


def content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
