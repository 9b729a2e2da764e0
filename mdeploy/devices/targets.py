"""`--device NAME` -> a device to work on: a profile alias or a serial; `host` is this machine."""

from __future__ import annotations

from dataclasses import dataclass

from mdeploy.devices.adb import STATE_HELP, Server, is_network_serial
from mdeploy.devices.profiles import HOST, DeviceProfile, Profiles, check_serial
from mdeploy.errors import DeviceError, InputError


@dataclass(frozen=True)
class Target:
    name: str  # what the user typed (alias or serial); names the results file
    profile: DeviceProfile  # the matched profile, or an anonymous one for a bare serial
    serial: str | None  # None for host

    @property
    def is_host(self) -> bool:
        return self.serial is None


@dataclass
class Listed:
    serial: str
    state: str
    model: str | None = None


def list_devices(server: Server) -> list[Listed]:
    from mdeploy.devices.adb import device_errors

    with device_errors(f"the adb server at {server.host}:{server.port}", "listing devices", server.timeout):
        infos = server.client().list(extended=True)
    return [Listed(i.serial, i.state, (i.tags.get("model") or "").replace("_", " ") or None) for i in infos]


TRANSIENT = ("offline", "connecting", "authorizing")


def _usable(listed: Listed, server: Server | None = None, wait: float = 5.0) -> Listed:
    """The device if it is ready; a device in a passing state (a reconnecting network device is
    `offline` for a moment) gets `wait` seconds to become ready."""
    if listed.state in TRANSIENT and server is not None:
        import time

        end = time.monotonic() + wait
        while time.monotonic() < end:
            time.sleep(0.2)
            now = {d.serial: d for d in list_devices(server)}.get(listed.serial)
            if now is not None and now.state == "device":
                return now
            if now is not None:
                listed = now
            if listed.state not in TRANSIENT:
                break
    if listed.state != "device":
        help_text = STATE_HELP.get(listed.state, "check the phone and the cable")
        raise DeviceError(f"{listed.serial} is {listed.state}", hint=help_text)
    return listed


def resolve(name: str, profiles: Profiles, server_factory) -> Target:
    """The device `name` means, connected and in the `device` state (or host)."""
    if name == HOST:
        return Target(HOST, profiles.get(HOST), None)
    profile = profiles.get(name)
    if profile is None:
        try:
            check_serial(name)
        except InputError:
            raise InputError(f"--device {name!r} is neither a profile ({', '.join(profiles.aliases())}) nor a serial") from None
        profile = DeviceProfile(alias=name, serial=name)
    server: Server = server_factory()
    listed = {d.serial: d for d in list_devices(server)}
    if profile.serial is not None:
        if profile.serial not in listed and is_network_serial(profile.serial):
            _connect(server, profile.serial)
            listed = {d.serial: d for d in list_devices(server)}
        if profile.serial not in listed:
            raise DeviceError(
                f"device {profile.serial} is not connected" + (f" (profile {profile.alias})" if profile.alias != profile.serial else ""),
                hint=_connected_hint(listed),
            )
        return Target(name, profile, _usable(listed[profile.serial], server).serial)
    candidates = []
    for d in listed.values():
        model = d.model
        if profile.match_model is not None and d.state == "device":
            from mdeploy.devices.adb import Phone

            model = Phone(server, d.serial).getprops().get("ro.product.model", model)
        if profile.matches(d.serial, model):
            candidates.append(d)
    what = ", ".join(f"{k} {v!r}" for k, v in (("model", profile.match_model), ("serial", profile.match_serial)) if v)
    if not candidates:
        raise DeviceError(f"no connected device matches profile {profile.alias} ({what})", hint=_connected_hint(listed))
    if len(candidates) > 1:
        raise DeviceError(
            f"{len(candidates)} connected devices match profile {profile.alias} ({what}): {', '.join(c.serial for c in candidates)}",
            hint="give the profile a serial, or pass --device SERIAL",
        )
    return Target(name, profile, _usable(candidates[0], server).serial)


def _connect(server: Server, serial: str) -> None:
    from mdeploy.devices.adb import device_errors

    with device_errors(serial, "connecting over the network", server.timeout):
        message = server.client().connect(serial, timeout=server.timeout)
    if "connected" not in message:
        raise DeviceError(f"could not connect to {serial}: {message.strip()}",
                          hint="check that the phone has wireless debugging on and is reachable")


NO_PHONE_HINT = "plug in the phone with USB debugging on (or `adb connect HOST:PORT`)"


def _connected_hint(listed: dict) -> str:
    if not listed:
        return f"no device is connected: {NO_PHONE_HINT}; `mdeploy devices` lists what adb sees"
    return "connected: " + ", ".join(f"{d.serial} ({d.state})" for d in listed.values()) + "; `mdeploy devices` shows details"
