"""Console output shared by the demo, the self-check and the benchmarks: one table formatter and
one progress bar (tqdm when it is installed; it is optional)."""

from __future__ import annotations

import importlib.util
import math
import sys


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def fmt_value(v) -> str:
    """The default cell: floats to 4 decimals (1 from 10 up), None empty, anything else as str."""
    if v is None:
        return ""
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def format_table(rows: list[dict], cols: list[str], formats: dict | None = None, default=fmt_value,
                 markdown: bool = False) -> str:
    """An aligned text table (or a markdown one) of ``rows`` in the order of ``cols``.

    ``formats`` maps a column to a format string (``"{:.2f}"``) or a function of the value, applied to
    numbers; other cells go through ``default``. Missing keys are empty cells."""
    formats = formats or {}

    def cell(r, c):
        v = r.get(c, "")
        if c in formats and isinstance(v, (int, float)) and not isinstance(v, bool):
            return formats[c](v) if callable(formats[c]) else formats[c].format(v)
        return default(v)

    cells = [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    else:
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip(), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def print_table(rows, cols, formats=None, default=fmt_value, echo=print) -> None:
    echo(format_table(rows, cols, formats, default))


class Progress:
    """A progress bar on stderr when tqdm is installed and ``enabled``, else nothing: ``update``
    advances it, ``write`` prints a line above it (or plainly), ``echo`` does either and numbers the
    finished steps when there is no bar."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, leave: bool = True):
        self.bar = None
        self.done, self.total, self.desc = 0, total, desc
        if enabled and self.available():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=leave, dynamic_ncols=True, mininterval=0.25,
                            file=sys.stderr)

    @staticmethod
    def available() -> bool:
        return _has("tqdm")

    @property
    def active(self) -> bool:
        return self.bar is not None

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def echo(self, line: str, advance: bool = False) -> None:
        """A line of a long run: ``advance`` lines (a finished step) move the bar, or without a bar
        are printed as ``[desc done/total] line``; the others are printed above the bar."""
        if advance:
            self.update()
            if self.bar is not None:
                return
            line = f"[{self.desc} {self.done}/{self.total}] {line.strip()}"
        self.write(line)

    def close(self, **postfix) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix)
            self.bar.close()
