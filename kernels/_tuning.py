"""Tuned launch configurations kept as data (kernels/configs/<family>.json), not in kernel bodies.

A family file holds an ordered list of candidate configs and an optional table of per-shape picks:

    {"configs": [{"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3}, ...],
     "picks": {"<shape key>": <index into configs>, ...}}

``pick(family, key, default=0)`` returns the config for a shape key (a string the kernel module
builds from the problem sizes and dtype); tuned picks are written by the benchmark/tuning scripts on
a GPU. ``FASTCNN_TRITON_CONFIG=<index>`` forces one config for every family (tests use it to run
every candidate, so no config can silently give a wrong result).
"""

from __future__ import annotations

import functools
import json
import os

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


@functools.lru_cache(None)
def load(family: str) -> dict:
    path = os.path.join(_DIR, f"{family}.json")
    with open(path) as f:
        data = json.load(f)
    if not data.get("configs"):
        raise ValueError(f"{path}: no configs")
    data.setdefault("picks", {})
    return data


def configs(family: str) -> list[dict]:
    return load(family)["configs"]


def pick(family: str, key: str, default: int = 0) -> dict:
    data = load(family)
    forced = os.environ.get("FASTCNN_TRITON_CONFIG")
    if forced is not None:
        idx = int(forced) % len(data["configs"])
    else:
        idx = data["picks"].get(key, default)
    return dict(data["configs"][idx])


def split(cfg: dict) -> tuple[dict, dict]:
    """(kernel constexpr meta-parameters, launch options num_warps/num_stages)."""
    launch = {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
    meta = {k: v for k, v in cfg.items() if k not in launch}
    return meta, launch
