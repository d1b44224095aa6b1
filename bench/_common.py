"""Helpers every benchmark here shares: the repository on ``sys.path`` and memory fields of
``/proc/<pid>/status`` (peak and current RSS, Linux)."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_repo() -> str:
    """Put the repository's root first on ``sys.path`` (benchmarks run as scripts); its path."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return ROOT


def proc_status_kib(key: str, pid: int | str = "self") -> int:
    """A memory field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in KiB; KeyError
    when the kernel does not report it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)
