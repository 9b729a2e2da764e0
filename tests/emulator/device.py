"""The emulated device: adbd's side of the ADB transport protocol over loopback TCP.

Protocol (as adbd implements it): every message is a 24-byte header (command, arg0, arg1,
payload length, payload checksum, command ^ 0xffffffff) and a payload. The host opens with
CNXN; the device answers CNXN with its banner (or AUTH when it is not authorized). The host
opens a stream with OPEN(local id, 0, "service"); the device answers OKAY(its id, host id)
or CLSE. Data flows as WRTE, each acknowledged by OKAY before the next one on that stream;
either side ends a stream with CLSE.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE", A_SYNC: "SYNC"}
VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN = 1
FEATURES = "shell_v2,cmd"

DEFAULT_PROPS = {
    "ro.product.manufacturer": "Google",
    "ro.product.model": "Pixel 7",
    "ro.product.name": "panther",
    "ro.product.device": "panther",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "GS201",
    "ro.board.platform": "gs201",
    "ro.serialno": "EMU0001",
    "ro.build.fingerprint": "google/panther/panther:14/UQ1A.240105.004/11206848:user/release-keys",
}


@dataclass
class Faults:
    """What the device does wrong. Each can be set and cleared while it runs."""

    drop_after_bytes: int | None = None  # close the connection abruptly once the host has sent this much stream data (once)
    stall: bool = False  # stop answering anything after the handshake (the socket stays open)
    unauthorized: bool = False  # answer CNXN with AUTH and never accept a key
    received: int = field(default=0, repr=False)


def _message(cmd: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    checksum = sum(data) & 0xFFFFFFFF
    return struct.pack("<6I", cmd, arg0, arg1, len(data), checksum, cmd ^ 0xFFFFFFFF) + data


class EmulatedDevice:
    """One emulated phone: `start()` listens on 127.0.0.1; `root` holds its file system."""

    def __init__(self, root: Path, *, props: dict[str, str] | None = None, faults: Faults | None = None,
                 extra_binds: list[str] | None = None, battery: tuple[int, int] = (87, 312)):
        self.root = Path(root)
        self.props = dict(DEFAULT_PROPS, **(props or {}))
        self.faults = faults or Faults()
        self.extra_binds = list(extra_binds or [])
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: list[_Connection] = []
        self._stopping = threading.Event()
        self.commands: list[str] = []  # every shell/exec command run, in order (for tests)
        self.durations: list[tuple[str, float]] = []  # (command, seconds it ran) once finished
        self.fs = self.root / "fs"
        self._make_fs(battery)

    # ------------------------------------------------------------------ file system

    def _make_fs(self, battery: tuple[int, int]) -> None:
        fs = self.fs
        for folder in ("data/local/tmp", "sdcard", "system/bin", "sys/class/thermal/thermal_zone0",
                       "sys/class/power_supply/battery", "sys/devices/system/cpu/cpu0/cpufreq"):
            (fs / folder).mkdir(parents=True, exist_ok=True)
        (fs / "system" / "build.prop").write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))
        getprop = (
            "#!/bin/sh\n"
            "if [ $# -eq 0 ]; then\n"
            "  sed -n 's/^\\([^#=][^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/p' /system/build.prop\n"
            "else\n"
            "  v=$(grep -m1 \"^$1=\" /system/build.prop | cut -d= -f2-)\n"
            "  echo \"${v:-$2}\"\n"
            "fi\n"
        )
        dumpsys = (
            "#!/bin/sh\n"
            "case \"$1\" in\n"
            "battery)\n"
            "  echo 'Current Battery Service state:'\n"
            "  echo '  AC powered: false'\n"
            "  echo '  USB powered: true'\n"
            "  echo '  status: 2'\n"
            "  echo '  health: 2'\n"
            "  echo '  present: true'\n"
            "  echo \"  level: $(cat /sys/class/power_supply/battery/capacity)\"\n"
            "  echo '  scale: 100'\n"
            "  echo '  voltage: 4123'\n"
            "  echo \"  temperature: $(cat /sys/class/power_supply/battery/temp)\"\n"
            "  echo '  technology: Li-ion'\n"
            "  ;;\n"
            "thermalservice)\n"
            "  echo 'IsStatusOverride: false'\n"
            "  echo \"Thermal Status: $(cat /sys/class/thermal/thermal_status 2>/dev/null || echo 0)\"\n"
            "  ;;\n"
            "*) echo \"Can't find service: $1\"; exit 1 ;;\n"
            "esac\n"
        )
        for name, text in (("getprop", getprop), ("dumpsys", dumpsys)):
            path = fs / "system" / "bin" / name
            path.write_text(text)
            path.chmod(0o755)
        level, temp = battery
        (fs / "sys/class/power_supply/battery/capacity").write_text(f"{level}\n")
        (fs / "sys/class/power_supply/battery/temp").write_text(f"{temp}\n")
        (fs / "sys/class/thermal/thermal_zone0/type").write_text("cpu-0-0\n")
        (fs / "sys/class/thermal/thermal_zone0/temp").write_text("41000\n")
        (fs / "sys/class/thermal/thermal_status").write_text("0\n")
        cpufreq = fs / "sys/devices/system/cpu/cpu0/cpufreq"
        (cpufreq / "scaling_governor").write_text("schedutil\n")
        (cpufreq / "scaling_cur_freq").write_text("1803000\n")
        (cpufreq / "scaling_max_freq").write_text("1803000\n")
        (cpufreq / "cpuinfo_max_freq").write_text("1803000\n")

    def set_sys(self, relative: str, value: str) -> None:
        """Change a /sys file (temperature, frequency...) as the phone would."""
        (self.fs / "sys" / relative).write_text(f"{value}\n")

    def device_path(self, path: str) -> Path | None:
        """The host file behind a device path the sync service may touch, or None."""
        clean = os.path.normpath("/" + path.lstrip("/"))
        for top in ("/data/local/tmp", "/sdcard", "/system"):
            if clean == top or clean.startswith(top + "/"):
                return self.fs / clean.lstrip("/")
        return None

    def sandbox(self, command: str) -> list[str]:
        """bubblewrap argv running `command` with /bin/sh in the device's file system."""
        bwrap = shutil.which("bwrap")
        assert bwrap, "bubblewrap is missing: `make test` installs it (Debian package bubblewrap)"
        argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
                "--symlink", "usr/lib", "/lib", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                "--bind", str(self.fs / "data"), "/data", "--bind", str(self.fs / "sdcard"), "/sdcard",
                "--ro-bind", str(self.fs / "system"), "/system", "--bind", str(self.fs / "sys"), "/sys"]
        if Path("/lib64").exists():
            argv += ["--symlink", "usr/lib64", "/lib64"]
        if Path("/etc/ld.so.cache").exists():
            argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        for path in self.extra_binds:
            argv += ["--ro-bind", path, path]
        argv += ["--setenv", "PATH", "/system/bin:/usr/bin:/bin", "--setenv", "HOME", "/data/local/tmp",
                 "--setenv", "TMPDIR", "/data/local/tmp", "--chdir", "/", "/bin/sh", "-c", command]
        return argv

    # ------------------------------------------------------------------ server

    def start(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):
            listener.bind(("127.0.0.1", 0))
            if not 5555 <= listener.getsockname()[1] <= 5585:  # adb probes these as emulators
                break
            listener.close()
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.listen(8)
        self._listener = listener
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept, name=f"emulated-device-{self.port}", daemon=True).start()
        return self.port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = _Connection(self, sock)
            self._connections.append(conn)
            conn.start()

    def drop_connections(self) -> None:
        for conn in list(self._connections):
            conn.abort()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        self.drop_connections()


class _Stream:
    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.inbound: queue.Queue[bytes | None] = queue.Queue()
        self.ready = threading.Event()  # the host acknowledged our last WRTE
        self.ready.set()
        self.closed = threading.Event()
        self.process: subprocess.Popen | None = None
        self._buffer = b""

    def write(self, data: bytes) -> bool:
        for i in range(0, len(data), self.conn.max_payload):
            while not self.ready.wait(0.1):
                if self.closed.is_set() or self.conn.dead.is_set():
                    return False
            if self.closed.is_set():
                return False
            self.ready.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, data[i : i + self.conn.max_payload])
        return True

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.kill()

    def kill(self) -> None:
        self.closed.set()
        self.inbound.put(None)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    # reading what the host sent, for services that parse it
    def read(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            chunk = self.inbound.get()
            if chunk is None:
                return None
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


class _Connection(threading.Thread):
    def __init__(self, device: EmulatedDevice, sock: socket.socket):
        super().__init__(name=f"adb-conn-{device.port}", daemon=True)
        self.device = device
        self.sock = sock
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD
        self.dead = threading.Event()
        self.online = False

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        if self.dead.is_set():
            return
        try:
            with self.lock:
                self.sock.sendall(_message(cmd, arg0, arg1, data))
        except OSError:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once, as a pulled cable or a dying adbd would."""
        if self.dead.is_set():
            return
        self.dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for stream in list(self.streams.values()):
            stream.kill()

    def _recv_exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def run(self) -> None:
        faults = self.device.faults
        while not self.dead.is_set():
            header = self._recv_exact(24)
            if header is None:
                break
            cmd, arg0, arg1, length, _checksum, magic = struct.unpack("<6I", header)
            if magic != cmd ^ 0xFFFFFFFF:
                break
            data = self._recv_exact(length) if length else b""
            if data is None:
                break
            if faults.stall and self.online:
                continue  # swallow everything: the host waits until it gives up
            if cmd == A_WRTE and faults.drop_after_bytes is not None:
                faults.received += len(data)
                if faults.received >= faults.drop_after_bytes:
                    faults.drop_after_bytes = None  # once: the next connection works
                    faults.received = 0
                    self.abort()
                    break
            self._handle(cmd, arg0, arg1, data)
        self.abort()

    def _handle(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        device = self.device
        if cmd == A_CNXN:
            self.max_payload = min(arg1 or MAX_PAYLOAD, MAX_PAYLOAD)
            if device.faults.unauthorized:
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
                return
            banner = "device::" + "".join(f"{k}={device.props[k]};" for k in ("ro.product.name", "ro.product.model", "ro.product.device"))
            self.send(A_CNXN, VERSION, MAX_PAYLOAD, (banner + f"features={FEATURES}").encode())
            self.online = True
        elif cmd == A_AUTH:
            if device.faults.unauthorized and arg0 == 2:  # a signature we "cannot verify": ask again
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
        elif not self.online:
            return
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            self._open(arg0, service)
        elif cmd == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.ready.set()
        elif cmd == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
                return
            stream.inbound.put(data)
            self.send(A_OKAY, stream.local_id, stream.remote_id)
        elif cmd == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None:
                stream.kill()

    def _open(self, remote_id: int, service: str) -> None:
        handler = None
        if service.startswith("shell,v2") or service.startswith("shell,"):
            options, _, command = service.partition(":")
            handler = (_shell_v2, command) if "v2" in options.split(",") else (_shell_v1, command)
        elif service.startswith("shell:"):
            handler = (_shell_v1, service[len("shell:") :])
        elif service.startswith("exec:"):
            handler = (_exec, service[len("exec:") :])
        elif service.startswith("sync:"):
            handler = (_sync, "")
        if handler is None:
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = self.next_id
        self.next_id += 1
        stream = _Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        fn, arg = handler
        threading.Thread(target=_run_service, args=(fn, stream, arg), daemon=True).start()


def _run_service(fn, stream: _Stream, arg: str) -> None:
    try:
        fn(stream, arg)
    finally:
        stream.close()
        stream.conn.streams.pop(stream.local_id, None)


# ---------------------------------------------------------------------------- services


def _spawn(stream: _Stream, command: str, merge: bool) -> subprocess.Popen:
    device = stream.conn.device
    device.commands.append(command)
    proc = subprocess.Popen(
        device.sandbox(command or "exec /bin/sh -i"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
    )
    stream.process = proc
    threading.Thread(target=_pump_stdin, args=(stream, proc, False), daemon=True).start()
    return proc


def _pump_stdin(stream: _Stream, proc: subprocess.Popen, packets: bool) -> None:
    """Host data -> the process's stdin (raw, or shell-v2 packets)."""
    try:
        while True:
            if packets:
                header = stream.read(5)
                if header is None:
                    break
                kind, length = header[0], struct.unpack("<I", header[1:])[0]
                payload = stream.read(length) if length else b""
                if payload is None:
                    break
                if kind == 0:
                    proc.stdin.write(payload)
                    proc.stdin.flush()
                elif kind == 4:
                    break
            else:
                chunk = stream.read(1)
                if chunk is None:
                    break
                rest = stream._buffer  # take whatever else arrived with it
                stream._buffer = b""
                proc.stdin.write(chunk + rest)
                proc.stdin.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _shell_v1(stream: _Stream, command: str) -> None:
    start = time.monotonic()
    proc = _spawn(stream, command, merge=True)
    for chunk in iter(lambda: proc.stdout.read1(65536), b""):
        if not stream.write(chunk):
            break
    proc.wait()
    stream.conn.device.durations.append((command, time.monotonic() - start))


def _exec(stream: _Stream, command: str) -> None:
    _shell_v1(stream, command)


def _shell_v2(stream: _Stream, command: str) -> None:
    device = stream.conn.device
    device.commands.append(command)
    start = time.monotonic()
    proc = subprocess.Popen(device.sandbox(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stream.process = proc
    threading.Thread(target=_pump_stdin, args=(stream, proc, True), daemon=True).start()
    lock = threading.Lock()

    def pump(pipe, kind: int) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            with lock:
                if not stream.write(bytes([kind]) + struct.pack("<I", len(chunk)) + chunk):
                    return

    readers = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    code = proc.wait()
    device.durations.append((command, time.monotonic() - start))
    with lock:
        stream.write(bytes([3]) + struct.pack("<I", 1) + bytes([code & 0xFF]))


def _sync(stream: _Stream, _arg: str) -> None:
    device = stream.conn.device
    while True:
        header = stream.read(8)
        if header is None:
            return
        request, length = header[:4].decode("latin-1"), struct.unpack("<I", header[4:])[0]
        if request == "QUIT":
            return
        payload = stream.read(length) if length else b""
        if payload is None:
            return
        if request == "STAT":
            target = device.device_path(payload.decode())
            if target is not None and target.exists():
                st = target.stat()
                stream.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
            else:
                stream.write(b"STAT" + struct.pack("<III", 0, 0, 0))
        elif request == "LIST":
            target = device.device_path(payload.decode())
            if target is not None and target.is_dir():
                for entry in sorted(target.iterdir()):
                    st = entry.stat()
                    name = entry.name.encode()
                    stream.write(b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name)) + name)
            stream.write(b"DONE" + bytes(16))
        elif request == "SEND":
            spec = payload.decode()
            path, _, mode = spec.rpartition(",")
            target = device.device_path(path)
            chunks, ok = [], True
            while True:
                head = stream.read(8)
                if head is None:
                    return  # the host went away mid-file: nothing is written
                kind, size = head[:4], struct.unpack("<I", head[4:])[0]
                if kind == b"DATA":
                    data = stream.read(size)
                    if data is None:
                        return
                    chunks.append(data)
                elif kind == b"DONE":
                    mtime = size
                    break
                else:
                    ok = False
                    break
            if not ok or target is None or str(target).startswith(str(device.fs / "system")):
                _fail(stream, f"remote couldn't create file: Permission denied: {path}")
                continue
            if not target.parent.is_dir():
                _fail(stream, f"remote secure_mkdirs failed: No such file or directory: {path}")
                continue
            target.write_bytes(b"".join(chunks))
            target.chmod(int(mode) & 0o777 if mode.isdigit() else 0o644)
            os.utime(target, (mtime, mtime))
            stream.write(b"OKAY" + bytes(4))
        elif request == "RECV":
            target = device.device_path(payload.decode())
            if target is None or not target.is_file():
                _fail(stream, f"remote object '{payload.decode()}' does not exist")
                continue
            data = target.read_bytes()
            for i in range(0, len(data), 64 * 1024):
                part = data[i : i + 64 * 1024]
                stream.write(b"DATA" + struct.pack("<I", len(part)) + part)
            stream.write(b"DONE" + bytes(4))
        else:
            _fail(stream, f"unknown sync request {request!r}")
            return


def _fail(stream: _Stream, message: str) -> None:
    data = message.encode()
    stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)


def python_binds() -> list[str]:
    """Folders the sandbox must see for a Python script of this interpreter to run (read-only)."""
    out = []
    for prefix in {sys.prefix, sys.base_prefix, os.path.realpath(sys.base_prefix)}:
        if not prefix.startswith("/usr"):
            out.append(prefix)
    return sorted(set(out))


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
