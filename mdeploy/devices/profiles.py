"""Device profiles: `devices.yaml` aliases -> how to find a phone and what it needs.

Profiles come from the user's file (`$XDG_CONFIG_HOME/mdeploy/devices.yaml`, else
`~/.config/mdeploy/devices.yaml`) and the project's (`devices.yaml` in the working folder,
or the one beside the recipe); a project alias overrides a user alias of the same name.
`host` always exists and means this machine.

```yaml
devices:
  pixel:
    match: {model: "Pixel 7*"}        # glob on ro.product.model; or serial: 1A2B3C4D5E
    abi: arm64-v8a
    soc: Tensor G2
    benchmark_binary: tools/arm64-v8a/benchmark_model   # relative to this file
    mace_run: tools/arm64-v8a/mace_run
    notes: the team's test phone
```
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from mdeploy.errors import InputError
from mdeploy.recipe.schema import RecipePath, Slug

HOST = "host"
ABIS = ("arm64-v8a", "armeabi-v7a", "x86_64", "x86")
_SERIAL = re.compile(r"^[A-Za-z0-9._:\-]+$")


def check_serial(value: str) -> str:
    """adb serials are letters, digits and . _ : - (host:port for network devices)."""
    if not _SERIAL.fullmatch(value) or len(value) > 128:
        raise InputError(f"{value!r} is not a device serial (letters, digits and . _ : - only)")
    return value


def _serial(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_serial(value)
    except InputError as err:
        raise PydanticCustomError("serial", "{m}", {"m": err.message}) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchSection(_Strict):
    model: str | None = Field(None, description="glob on ro.product.model, e.g. 'Pixel 7*'")
    serial: str | None = Field(None, description="glob on the adb serial")


class ProfileSection(_Strict):
    serial: Annotated[str | None, AfterValidator(_serial)] = Field(None, description="exact adb serial (host:port for network adb)")
    match: MatchSection | None = None
    abi: Literal["arm64-v8a", "armeabi-v7a", "x86_64", "x86"] | None = None
    soc: str | None = None
    benchmark_binary: RecipePath | None = Field(None, description="TFLite benchmark_model built for this device's ABI")
    mace_run: RecipePath | None = Field(None, description="MACE's mace_run built for this device's ABI")
    notes: str = ""

    @model_validator(mode="after")
    def _findable(self):
        if self.serial is None and (self.match is None or (self.match.model is None and self.match.serial is None)):
            raise PydanticCustomError("unfindable", "a profile needs serial or match (model or serial glob) to find its device", {})
        return self


class DevicesFile(_Strict):
    devices: dict[Slug, ProfileSection] = Field(default_factory=dict)


@dataclass(frozen=True)
class DeviceProfile:
    alias: str
    serial: str | None = None
    match_model: str | None = None
    match_serial: str | None = None
    abi: str | None = None
    soc: str | None = None
    benchmark_binary: Path | None = None
    mace_run: Path | None = None
    notes: str = ""
    source: str | None = None  # FILE:LINE of its definition

    @property
    def is_host(self) -> bool:
        return self.alias == HOST

    def matches(self, serial: str, model: str | None) -> bool:
        if self.serial is not None:
            return serial == self.serial
        if self.match_serial is not None and not fnmatch.fnmatchcase(serial, self.match_serial):
            return False
        if self.match_model is not None and not (model is not None and fnmatch.fnmatchcase(model, self.match_model)):
            return False
        return True

    def to_json(self) -> dict:
        return {
            "alias": self.alias,
            "serial": self.serial,
            "match": {"model": self.match_model, "serial": self.match_serial},
            "abi": self.abi,
            "soc": self.soc,
            "benchmark_binary": str(self.benchmark_binary) if self.benchmark_binary else None,
            "mace_run": str(self.mace_run) if self.mace_run else None,
            "notes": self.notes,
            "source": self.source,
        }


HOST_PROFILE = DeviceProfile(alias=HOST, notes="this machine (LiteRT / ONNX Runtime in a separate process)")


@dataclass
class Profiles:
    by_alias: dict[str, DeviceProfile] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def get(self, alias: str) -> DeviceProfile | None:
        return self.by_alias.get(alias)

    def aliases(self) -> list[str]:
        return sorted(self.by_alias)

    def matching(self, serial: str, model: str | None) -> list[DeviceProfile]:
        return [p for p in self.by_alias.values() if not p.is_host and p.matches(serial, model)]


def user_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mdeploy" / "devices.yaml"


def load_profiles(project_dirs: list[Path] | None = None) -> Profiles:
    """The user's profiles, then each project folder's `devices.yaml` (later ones win), plus host."""
    from mdeploy.recipe.loader import validate_with
    from mdeploy.recipe.source import display_path, parse_yaml, read_yaml_file

    profiles = Profiles({HOST: HOST_PROFILE})
    candidates = [user_file()] + [Path(d) / "devices.yaml" for d in (project_dirs or [Path.cwd()])]
    seen = set()
    for path in candidates:
        path = path.absolute()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        display = display_path(path)
        data, sources = parse_yaml(read_yaml_file(path, display, "device profiles"), display, path.parent)
        parsed = validate_with(DevicesFile, data if data is not None else {}, sources, hint="see docs/devices.md for the format")
        for alias, section in parsed.devices.items():
            if alias == HOST:
                mark = sources.mark_for(("devices", alias), prefer_key=True)
                raise InputError(f"{mark if mark else display}: 'host' is built in (this machine) and cannot be redefined")
            mark = sources.mark_for(("devices", alias), prefer_key=True)
            profiles.by_alias[alias] = DeviceProfile(
                alias=alias,
                serial=section.serial,
                match_model=section.match.model if section.match else None,
                match_serial=section.match.serial if section.match else None,
                abi=section.abi,
                soc=section.soc,
                benchmark_binary=section.benchmark_binary,
                mace_run=section.mace_run,
                notes=section.notes,
                source=f"{mark.file}:{mark.line}" if mark else display,
            )
        profiles.files.append(path)
    return profiles
