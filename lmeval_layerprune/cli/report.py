"""``lmeval-prune report`` (placeholder; filled in below)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    pass
