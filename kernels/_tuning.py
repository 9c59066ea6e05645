"""Tuned launch configurations kept as data (kernels/configs/), not in kernel bodies.

``candidates.json`` holds one ordered candidate list per kernel kind (``conv_gemm``: conv2d and
conv1x1 forward and dgrad; ``conv_wgrad``: their weight gradients; ``pool``: max_pool2d forward and
backward; ``elementwise``: add_relu and its backward). A family file ``<family>.json`` names its
kind and holds the family's table of per-shape picks:

    {"candidates": "conv_gemm", "picks": {"<shape key>": <index into the kind's list>, ...}}

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


CANDIDATES = "candidates"  # kernels/configs/candidates.json: {kind: [config, ...]}


def _read(name: str) -> dict:
    with open(os.path.join(_DIR, f"{name}.json")) as f:
        return json.load(f)


@functools.lru_cache(None)
def candidates() -> dict[str, list[dict]]:
    """Every kernel kind's candidate list."""
    kinds = _read(CANDIDATES)
    for kind, cfgs in kinds.items():
        if not cfgs:
            raise ValueError(f"{CANDIDATES}.json: kind {kind!r} has no configs")
    return kinds


def families() -> list[str]:
    """The family names (every kernels/configs/*.json but the candidate lists)."""
    names = (f[:-5] for f in os.listdir(_DIR) if f.endswith(".json"))
    return sorted(n for n in names if n != CANDIDATES)


@functools.lru_cache(None)
def load(family: str) -> dict:
    """{"kind", "configs" (the kind's candidate list), "picks"} of a family."""
    data = _read(family)
    kind = data.get("candidates")
    kinds = candidates()
    if kind not in kinds:
        raise ValueError(f"{family}.json: candidates {kind!r} is not a kind of {CANDIDATES}.json ({sorted(kinds)})")
    return {"kind": kind, "configs": kinds[kind], "picks": data.get("picks", {})}


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
