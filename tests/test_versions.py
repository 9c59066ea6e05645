"""The supported range (Python 3.11-3.12, torch 2.11-2.13, Triton 3.6): stated in the metadata, checked
at import, and no torch API newer than 2.11 in fastcnn's code.

The API check reads tests/data/torch_api_after_2.11.txt (tools/torch_api_diff.py: every torch Python
module and module-level name that torch 2.13 has and 2.11 lacks, from the two wheels read statically)
and flags any reference to one of them in fastcnn/, kernels/, bench/, tools/, tests/ and setup.py:
``torch.a.b`` attribute chains through any alias (``import torch.nn.functional as F``, ``from torch
import nn``) and ``from torch.x import y``. New keyword arguments and Tensor methods are not in the
list; the GPU machine's torch 2.11 run covers those.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib

import pytest

import fastcnn
from fastcnn import _versions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("fastcnn", "kernels", "bench", "tools", "tests", "setup.py")
API_FILE = os.path.join(ROOT, "tests", "data", "torch_api_after_2.11.txt")


def _new_api():
    modules, names = set(), set()
    with open(API_FILE) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) == 1:
                modules.add(parts[0])
            else:
                names.add((parts[0], parts[1]))
    return modules, names


NEW_MODULES, NEW_NAMES = _new_api()


def _chain(node):
    """``a.b.c`` of an Attribute/Name node as ['a', 'b', 'c'], or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def _flag(dotted: list[str]) -> list[str]:
    """The new-since-2.11 parts of a fully qualified chain ['torch', 'nn', 'X', ...]."""
    out = []
    for i in range(1, len(dotted)):
        prefix, attr = ".".join(dotted[:i]), dotted[i]
        if ".".join(dotted[:i + 1]) in NEW_MODULES or (prefix, attr) in NEW_NAMES:
            out.append(".".join(dotted[:i + 1]))
    return out


def scan_source(src: str, filename: str = "<src>") -> list[str]:
    """Every use of a torch API newer than 2.11 in ``src``, as 'file:line: torch.x.y'."""
    tree = ast.parse(src, filename)
    alias: dict[str, list[str]] = {}
    found = []

    def report(node, dotted):
        found.extend(f"{filename}:{node.lineno}: {name}" for name in _flag(dotted))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "torch":
                    report(node, a.name.split("."))
                    if a.asname:
                        alias[a.asname] = a.name.split(".")
                    else:
                        alias["torch"] = ["torch"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "torch":
            base = node.module.split(".")
            report(node, base)
            for a in node.names:
                if a.name != "*":
                    report(node, base + [a.name])
                    alias[a.asname or a.name] = base + [a.name]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):  # inner chains (torch.nn of torch.nn.X) flag nothing new
            chain = _chain(node)
            if chain and chain[0] in alias:
                report(node, alias[chain[0]] + chain[1:])
    return sorted(set(found))


def _sources():
    for top in SCANNED:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
            continue
        for dirpath, _, files in os.walk(path):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(dirpath, f)


def test_the_api_list_is_the_2_11_to_2_13_diff():
    with open(API_FILE) as f:
        head = f.readline()
    assert "torch 2.13" in head and "torch 2.11" in head, head
    assert len(NEW_NAMES) > 100  # the list is the real diff, not an empty file that lets everything through


def test_scanner_flags_apis_newer_than_2_11():
    # a test that can fail: torch 2.13 names 2.11 lacks, through each form of reference
    src = textwrap.dedent("""
        import torch
        import torch.nn.functional as F
        from torch import nn
        from torch.nn import LinearCrossEntropyLoss
        torch.compiler.get_default_backend()
        F.linear_cross_entropy
        nn.LinearCrossEntropyOptions
        torch.nn.functional.conv2d
    """)
    found = scan_source(src)
    for name in ("torch.nn.LinearCrossEntropyLoss", "torch.compiler.get_default_backend",
                 "torch.nn.functional.linear_cross_entropy", "torch.nn.LinearCrossEntropyOptions"):
        assert any(line.endswith(" " + name) for line in found), (name, found)
    assert not any("conv2d" in line for line in found)


def test_no_torch_api_newer_than_2_11():
    found = []
    for path in _sources():
        with open(path, encoding="utf-8") as f:
            found += scan_source(f.read(), os.path.relpath(path, ROOT))
    assert not found, "torch APIs newer than 2.11 (the oldest supported torch):\n" + "\n".join(found)


def test_metadata_states_the_range():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    project = meta["project"]
    lo, hi = _versions.PYTHON
    assert project["requires-python"] == f">={lo[0]}.{lo[1]}"
    for minor in range(lo[1], hi[1] + 1):
        assert f"Programming Language :: Python :: 3.{minor}" in project["classifiers"]
    (a, b), (c, d) = _versions.TRITON
    assert project["optional-dependencies"]["triton"] == [f"triton>={a}.{b},<{c}.{d + 1}"]
    # torch is never a dependency nor a build requirement (pip would install a second torch)
    assert not any(r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() == "torch"
                   for r in project["dependencies"] + meta["build-system"]["requires"])
    assert "version" in project["dynamic"] and fastcnn.__version__


def test_the_running_versions_are_supported():
    # CI (torch 2.13, Python 3.11) and the GPU machine (torch 2.11, Python 3.12) run this file
    import torch

    assert _versions.problems(str(torch.__version__), _versions._triton_version(), sys.version_info[:2]) == []


@pytest.mark.parametrize("torch_v,triton_v,py,bad", [
    ("2.11.0+cu130", "3.6.0", (3, 12), []),
    ("2.13.0+cpu", None, (3, 11), []),
    ("2.12.1", "3.6.1", (3, 11), []),
    ("2.10.0", "3.6.0", (3, 11), ["torch 2.10.0"]),
    ("2.14.0.dev20261101", "3.6.0", (3, 11), ["torch 2.14.0.dev20261101"]),
    ("3.0.0", "3.7.0", (3, 13), ["torch 3.0.0", "Triton 3.7.0", "Python 3.13"]),
    ("2.13.0", "3.5.0", (3, 10), ["Triton 3.5.0", "Python 3.10"]),
])
def test_problems(torch_v, triton_v, py, bad):
    got = _versions.problems(torch_v, triton_v, py)
    assert len(got) == len(bad), got
    for g, b in zip(got, bad):
        assert g.startswith(b + " is outside the supported"), got


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_import_warns_outside_the_range():
    # the real import path: a torch that reports 2.10 makes `import fastcnn` warn, naming the range
    out = _python("import warnings, torch; torch.__version__ = '2.10.0'\n"
                  "with warnings.catch_warnings(record=True) as w:\n"
                  "    warnings.simplefilter('always')\n"
                  "    import fastcnn\n"
                  "print([str(x.message) for x in w if x.category is fastcnn.UnsupportedVersionWarning])")
    assert out.returncode == 0, out.stderr
    assert "torch 2.10.0 is outside the supported 2.11 to 2.13" in out.stdout, out.stdout


def test_import_is_silent_in_the_range():
    out = _python("import warnings\nwarnings.simplefilter('error')\nimport fastcnn\nprint('ok')")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
