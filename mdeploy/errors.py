"""The one exception family of mdeploy.

The library raises these; callers decide policy. The CLI turns any of them into a
single message and the exit code of its class (2 bad input, 1 a gate failed, 3 a
device or environment problem). Every other exception is a bug in mdeploy.
"""

from __future__ import annotations

import errno


class MdeployError(Exception):
    """Base class: a message for the user, an optional hint, and an exit code."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def render(self) -> str:
        head = f"{self.where}: {self.message}" if self.where else self.message
        lines = [f"error: {head}"]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "where": self.where,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class InputError(MdeployError):
    """Bad input from the user: arguments, files, recipe values."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe that does not load or validate; carries every problem found."""

    def __init__(self, issues: list, *, hint: str | None = None):
        self.issues = list(issues)
        first = self.issues[0].render() if self.issues else "invalid recipe"
        extra = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(first + extra, hint=hint)

    def render(self) -> str:
        lines = [f"error: {issue.render()}" for issue in self.issues]
        lines.append(f"{len(self.issues)} problem{'s' if len(self.issues) != 1 else ''} found")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        data = super().to_json()
        data["issues"] = [issue.to_json() for issue in self.issues]
        return data


class ModelError(InputError):
    """A model file that cannot be read, or does not match what the recipe says."""


class GateFailure(MdeployError):
    """A verification gate (parity, accuracy, ...) failed; artifacts were still written."""

    exit_code = 1


class EnvironmentProblem(MdeployError):
    """Something outside the user's input is missing or broken: a tool, a disk, a server."""

    exit_code = 3


class DeviceError(EnvironmentProblem):
    """A phone (or the adb server) is missing, unauthorized, stalled or failing."""


class WorkerFinished(MdeployError):
    """Not an error: a non-chief worker of a multi-worker run is done; the chief writes results."""

    exit_code = 0

    def render(self) -> str:
        return f"note: {self.message}"


# Errors of the file system that are the machine's state, never mdeploy's logic: a read-only
# or full disk, a folder the user may not write. Anywhere they surface they are exit 3.
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def environment_problem(err: BaseException) -> EnvironmentProblem | None:
    """The EnvironmentProblem an OSError stands for (permission, read-only or full disk), else None."""
    if not isinstance(err, OSError) or err.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = f"{err.filename}: " if err.filename else ""
    return EnvironmentProblem(
        f"{where}{err.strerror or err}", hint="check that the folder is writable and the disk has room, or write elsewhere"
    )
