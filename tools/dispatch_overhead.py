"""Per-call cost of the public ops on tiny CPU tensors (the dispatch and validation path, not the
kernels): median over 15 blocks of 2,000 calls, one thread. Run the same script under two builds at
the same time (same load) to compare them; prints one CSV row per op.

    python tools/dispatch_overhead.py [--label NAME]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import torch

import fastcnn
import fastcnn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="", help="a name for this build in the rows (default: none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    a, b = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    x, w = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 1, 1)
    calls = {"add_relu": lambda: F.add_relu(a, b), "max_pool2d": lambda: F.max_pool2d(x, 2),
             "conv2d": lambda: F.conv2d(x, w)}
    root = fastcnn.__file__.rsplit("/fastcnn/", 1)[0]
    sha = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    print("label,git_sha,op,us_per_call_p50,us_p20,us_p80")
    for name, fn in calls.items():
        for _ in range(2000):
            fn()
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            for _ in range(2000):
                fn()
            ts.append((time.perf_counter() - t) / 2000 * 1e6)
        q = statistics.quantiles(ts, n=5)
        print(f"{args.label},{sha},{name},{statistics.median(ts):.2f},{q[0]:.2f},{q[3]:.2f}")


if __name__ == "__main__":
    main()
