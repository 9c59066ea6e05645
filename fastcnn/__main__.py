"""``python -m fastcnn <command>``: check | demo | bench."""

from __future__ import annotations

import argparse
import sys


def bench_main(argv=None) -> int:
    from .bench import suite

    return suite.main(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m fastcnn", description="fastcnn command line")
    ap.add_argument("command", choices=["check", "demo", "bench"], help="check: every op against PyTorch; demo: "
                    "the main job; bench: the benchmark suite (--help for its options)")
    if not argv:
        ap.print_help()
        return 2
    a, rest = ap.parse_known_args(argv[:1])
    if a.command == "bench":
        return bench_main(argv[1:])
    if a.command == "check":
        from . import selfcheck

        return selfcheck.main()
    from . import demo

    return demo.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
