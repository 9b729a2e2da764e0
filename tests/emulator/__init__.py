"""A project-owned emulated Android device, for tests and benchmarks without a phone.

`EmulatedDevice` is a loopback TCP server that speaks the ADB transport protocol as adbd
does (CNXN/AUTH/OPEN/OKAY/WRTE/CLSE; the services shell v1 and v2, exec and sync), so a
real adb server registers it with `adb connect 127.0.0.1:PORT` and every client (adbutils,
mdeploy, the adb command line) talks to it as to a phone. Its shell runs commands under
bubblewrap in a throw-away file system (/data/local/tmp, /sdcard, a /system with getprop and
dumpsys scripts reading a build.prop, a /sys with thermal and cpufreq files). Faults can be
injected: drop the connection after N bytes, stall, or stay unauthorized.

`AdbServer` runs the real adb binary from the adbutils wheel, loopback-only and quiet, on a
free port outside 5555-5585.
"""

from tests.emulator.adb_server import AdbServer
from tests.emulator.device import EmulatedDevice, Faults

__all__ = ["AdbServer", "EmulatedDevice", "Faults"]
