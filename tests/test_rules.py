"""One copy of each rule per language: the output-size formulas and the activation names are defined
once in C++ (csrc/geometry.h, csrc/checks.h) and once in Python (kernels/_common.py,
fastcnn/_checks.py) across csrc/, fastcnn/, kernels/ and bench/; everything else uses those."""

from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREES = ("csrc", "fastcnn", "kernels", "bench")
CPP = (".h", ".cpp", ".cu", ".cuh")


def _sources():
    for tree in TREES:
        for root, _, files in os.walk(os.path.join(REPO, tree)):
            for f in sorted(files):
                if f.endswith(CPP + (".py",)):
                    path = os.path.join(root, f)
                    yield os.path.relpath(path, REPO), open(path, encoding="utf-8").read()


def _code(src: str, python: bool) -> str:
    """The source without comments and docstrings (a rule quoted in prose is not a definition)."""
    if python:
        src = re.sub(r'"""[\s\S]*?"""', "", src)
        return re.sub(r"#.*", "", src)
    src = re.sub(r"/\*[\s\S]*?\*/", "", src)
    return re.sub(r"//.*", "", src)


def _hits(pattern):
    out = {"C++": [], "Python": []}
    for path, src in _sources():
        python = path.endswith(".py")
        for m in re.finditer(pattern, _code(src, python)):
            out["Python" if python else "C++"].append(path)
    return out


# in + 2*p - d*(k - 1) - 1 (conv and pool output size), and the (in + 2p - eff) / s + 1 spelling.
SIZE_FORMULA = r"\*\s*\(\s*[\w.]+\s*-\s*1\s*\)\s*-\s*1|-\s*eff\w*\s*\)\s*/+\s*[\w.\[\]]+\s*\+\s*1"


def test_output_size_formulas_are_defined_once_per_language():
    hits = _hits(SIZE_FORMULA)
    assert hits["C++"] == ["csrc/geometry.h"] * 2, hits["C++"]  # conv_out_size, pool_out_size
    assert hits["Python"] == ["kernels/_common.py"] * 2, hits["Python"]


@pytest.mark.parametrize("name", ["conv_out_size", "pool_out_size"])
def test_each_formula_has_one_definition(name):
    cpp = _hits(rf"\bint64_t\s+{name}\s*\(")["C++"]
    py = _hits(rf"\bdef\s+{name}\s*\(")["Python"]
    assert cpp == ["csrc/geometry.h"] and py == ["kernels/_common.py"], (cpp, py)


def test_activation_names_are_defined_once_per_language():
    py = _hits(r"""[(\[{]\s*['"]none['"]\s*,\s*['"]relu['"]|[(\[{]\s*['"]relu['"]\s*,\s*['"]none['"]""")["Python"]
    assert py == ["fastcnn/_checks.py"], py  # ACTIVATIONS
    cpp = _hits(r'==\s*"(none|relu)"')["C++"]
    assert cpp == ["csrc/checks.h"] * 2, cpp  # parse_activation
    assert not _hits(r"""['"]identity['"]""")["Python"] and not _hits(r'"identity"')["C++"]


# A file the next engineer can hold in their head: over MAX_LINES a source says why in its first
# lines ("size: <reason>"), e.g. a kernel whose variants must share one translation unit.
MAX_LINES = 800
SIZE_TREES = ("csrc", "fastcnn", "kernels", "bench", "tests", "tools", ".ci")


def test_no_source_file_is_over_800_lines_without_a_reason():
    long = []
    for tree in SIZE_TREES:
        for root, dirs, files in os.walk(os.path.join(REPO, tree)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "data", "results")]
            for f in files:
                if not f.endswith(CPP + (".py", ".sh")):
                    continue
                path = os.path.join(root, f)
                lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
                if len(lines) > MAX_LINES and not any("size:" in line for line in lines[:5]):
                    long.append(f"{os.path.relpath(path, REPO)} ({len(lines)} lines)")
    assert not long, f"over {MAX_LINES} lines with no 'size:' reason in the first 5 lines: {long}"
