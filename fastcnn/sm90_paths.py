"""``python -m fastcnn.sm90_paths``: the sm90 path (fastcnn.sm90) of every conv layer of LeNet-5,
AlexNet, GoogLeNet and ResNet-50 (bench/shapes.py), per pass, with the reason; decided on meta tensors
for a given capability, dtype and mode, so it runs without a GPU."""

from __future__ import annotations

import argparse

import torch

from . import sm90


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastcnn.sm90_paths",
                                     description="The sm90 path of every conv layer of the four networks.")
    parser.add_argument("--nets", default=None, help="comma-separated subset of lenet5,alexnet,googlenet,resnet50")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32", "float64"])
    parser.add_argument("--capability", default="9.0", help="compute capability to decide for (default 9.0)")
    parser.add_argument("--mode", default="force", choices=sm90.MODES,
                        help="FASTCNN_SM90 to decide for (default force)")
    parser.add_argument("--as-built", action="store_true",
                        help="use this installation's _C_sm90 availability instead of assuming it is loaded")
    parser.add_argument("--nchw", action="store_true", help="NCHW tensors instead of channels_last")
    parser.add_argument("--no-tf32", action="store_true", help="TF32 disallowed (float32)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    major, minor = (int(v) for v in args.capability.split("."))
    nets = args.nets.split(",") if args.nets else None
    rows = sm90.layer_paths(nets, args.batch, getattr(torch, args.dtype), (major, minor), args.mode,
                       sm90.available() if args.as_built else True, not args.nchw, not args.no_tf32)
    print(f"# sm90 path per conv layer: dtype {args.dtype}, capability {major}.{minor}, FASTCNN_SM90={args.mode}, "
          f"{'NCHW' if args.nchw else 'channels_last'}, _C_sm90 {'as built' if args.as_built else 'assumed loaded'}")
    for layer, paths in rows:
        head = f"{layer.net:10s} {layer.name:24s} {layer.shape:34s}"
        print(head + "  " + "  ".join(f"{p}={paths[p][0]}" for p in sm90.PASSES))
        for p in sm90.PASSES:
            print(f"{'':12s}{p}: {paths[p][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
