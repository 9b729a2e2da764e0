"""What `mdeploy push` and `mdeploy bench` cost beyond the model's own run time (emulated phone).

    python device_overhead.py --model ../build/cpm_android/tflite/cpm_android_fp16.tflite

Starts the real adb server (adbutils' binary) and the project's emulated phone
(tests/emulator), then runs the real CLI in child processes, as a user would:

- push throughput: a 32 MB file, first push (sent) and second push (skipped by hash);
- bench overhead: wall time of `mdeploy bench MODEL --device SERIAL` minus the time the
  benchmark tool itself ran on the phone (the emulated device times every command), i.e.
  CLI start-up, adb connection, device description and state reads, hashing, pushing
  (first run) or hash checks (later runs), and parsing. Target: under 2 s for one model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine

sys.path.insert(0, str(REPO))

from tests.emulator import AdbServer, EmulatedDevice  # noqa: E402
from tests.emulator.device import python_binds  # noqa: E402


def cli(*args: str, env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mdeploy", *args, "--json"], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mdeploy {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mdeploy-overhead-"))
    tool = tmp / "benchmark_model"
    tool.write_text(f"#!{os.path.abspath(sys.executable)}\n" + (REPO / "tests/emulator/benchmark_model.py").read_text().split("\n", 1)[1])
    tool.chmod(0o755)
    server = AdbServer(tmp / "adb").start()
    device = EmulatedDevice(tmp / "phone", extra_binds=python_binds())
    device.start()
    try:
        server.connect(device.serial)
        env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(server.port))
        env.pop("ANDROID_ADB_SERVER_HOST", None)

        big = tmp / "payload.bin"
        big.write_bytes(os.urandom(32 * 1024 * 1024))
        wall, out = cli("push", str(big), "--device", device.serial, env=env)
        sent = out["devices"][0]["files"][0]
        wall2, out2 = cli("push", str(big), "--device", device.serial, env=env)
        skipped = out2["devices"][0]["files"][0]

        bench_args = ["bench", str(args.model.resolve()), "--device", device.serial, "--benchmark-binary", str(tool),
                      "--runs", "20", "--warmup", "2", "--trials", "3"]
        overheads = []
        for _ in range(args.repeats + 1):  # the first run pushes model and tool; the rest find them there
            before = len(device.durations)
            wall_b, _ = cli(*bench_args, env=env)
            tool_time = sum(d for c, d in device.durations[before:] if "--graph=" in c)
            overheads.append((wall_b, tool_time, wall_b - tool_time))
        first, later = overheads[0], overheads[1:]
        date = datetime.date.today().isoformat()
        print(f"# device overhead (emulated phone over the real adb server), {date}, {machine()}")
        print("| what | value |")
        print("|---|---|")
        print(f"| push 32 MB, sent | {sent['seconds']:.2f} s in mdeploy ({32 / sent['seconds']:.0f} MB/s), {wall:.2f} s wall with CLI start-up |")
        print(f"| push 32 MB again, skipped by hash | {skipped['seconds']:.2f} s in mdeploy, {wall2:.2f} s wall |")
        print(f"| bench, first run (pushes model + tool) | wall {first[0]:.2f} s, tool {first[1]:.2f} s, overhead {first[2]:.2f} s |")
        med = statistics.median(o[2] for o in later)
        print(f"| bench, files already there (median of {len(later)}) | wall {statistics.median(o[0] for o in later):.2f} s, "
              f"tool {statistics.median(o[1] for o in later):.2f} s, overhead {med:.2f} s |")
    finally:
        server.stop()
        device.stop()


if __name__ == "__main__":
    main()
