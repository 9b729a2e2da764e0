"""How mdeploy writes quantities for people: one size format for the CLI and the report."""

from __future__ import annotations


def human_size(n: int, signed: bool = False) -> str:
    """Bytes in binary units (B, KiB, MiB, GiB); the report shows the exact bytes on hover."""
    sign = "+" if signed and n > 0 else ("-" if n < 0 else "")
    size = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
