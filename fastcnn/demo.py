"""``python -m fastcnn demo``: the main job. Step 1 verifies every fused op against PyTorch on each
available device and backend and prints the PASS table."""

from __future__ import annotations

import argparse

import torch

from . import check


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastcnn demo")
    ap.parse_args(argv)
    print(f"fastcnn demo: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")
    print("\n[1] every fused op, forward and backward, against PyTorch (float64 reference)\n")
    ok = check.print_table(check.run())
    return 0 if ok else 1
