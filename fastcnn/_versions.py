"""The supported versions, in one place, and the import-time check against them.

Tested: torch 2.11 (the GPU machine: Python 3.12, torch 2.11+cu130, Triton 3.6) and torch 2.13 (CI:
Python 3.11, CPU). fastcnn's code uses no torch API newer than 2.11 (tests/test_versions.py).
Outside the range ``import fastcnn`` still proceeds, with an ``UnsupportedVersionWarning`` naming
what is out of range: the extension is compiled against the installed torch, so a newer one may
well work, but nothing here has run on it.
"""

from __future__ import annotations

import re
import sys
import warnings

# (major, minor) bounds, inclusive: a whole minor series is in or out (2.13.0+cpu, 2.13.1 and
# 2.11.0+cu130 alike), compared as integers, never as strings.
TORCH = ((2, 11), (2, 13))
TRITON = ((3, 6), (3, 6))
PYTHON = ((3, 11), (3, 12))

__all__ = ["UnsupportedVersionWarning", "problems", "warn_if_unsupported", "TORCH", "TRITON", "PYTHON"]


class UnsupportedVersionWarning(UserWarning):
    """torch, Triton or Python outside the range fastcnn is tested on (fastcnn._versions)."""


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _span(bounds) -> str:
    (a, b), (c, d) = bounds
    return f"{a}.{b}" if (a, b) == (c, d) else f"{a}.{b} to {c}.{d}"


def problems(torch_version: str, triton_version: str | None, python_version: tuple[int, int]) -> list[str]:
    """What is out of range, one sentence each (empty: all supported). ``triton_version`` None: not
    installed (Triton is optional)."""
    out = []
    for name, version, bounds in (("torch", torch_version, TORCH), ("Triton", triton_version, TRITON)):
        if version is None:
            continue
        mv = _minor(version)
        if mv is None or not bounds[0] <= mv <= bounds[1]:
            out.append(f"{name} {version} is outside the supported {_span(bounds)}")
    if not PYTHON[0] <= tuple(python_version[:2]) <= PYTHON[1]:
        out.append(f"Python {python_version[0]}.{python_version[1]} is outside the supported {_span(PYTHON)}")
    return out


def _triton_version() -> str | None:
    # the installed distribution's version, without importing triton (slow, and optional here)
    from importlib import metadata

    try:
        return metadata.version("triton")
    except metadata.PackageNotFoundError:
        return None


def warn_if_unsupported() -> None:
    import torch

    found = problems(str(torch.__version__), _triton_version(), sys.version_info[:2])
    if found:
        warnings.warn("fastcnn is tested on torch " + _span(TORCH) + ", Triton " + _span(TRITON) + " and Python "
                      + _span(PYTHON) + "; " + "; ".join(found) + ". It may work, but nothing has been tested "
                      "there (silence with warnings.filterwarnings('ignore', category="
                      "fastcnn.UnsupportedVersionWarning)).", UnsupportedVersionWarning, stacklevel=2)
