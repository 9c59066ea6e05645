"""Installing: a build that cannot see torch (pip's default isolated build environment) stops within
seconds with a message that names ``--no-build-isolation`` (never a bare ``No module named
'torch'``), torch is never a build requirement, and the metadata is complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# setup.py as pip's isolated build runs it: torch cannot be imported (the process blocks the import;
# the interpreter's own site-packages, which setup.py asks for the advice, still has torch).
_ISOLATED = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name']; "
             "__file__ = 'setup.py'; exec(compile(open('setup.py').read(), 'setup.py', 'exec'))")


def test_build_without_torch_fails_fast_and_names_no_build_isolation():
    import torch

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _ISOLATED], cwd=ROOT, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert out.returncode != 0
    msg = out.stderr
    assert "pip install --no-build-isolation ." in msg, msg
    assert f"torch {torch.__version__} is installed" in msg, msg  # it found the torch outside the build env
    assert "No module named" not in msg and "Traceback" not in msg, msg
    assert seconds < 30, seconds  # within seconds, before any compiling


def test_torch_is_not_a_build_or_install_requirement():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    reqs = meta["build-system"]["requires"] + meta["project"]["dependencies"]
    for extra in meta["project"]["optional-dependencies"].values():
        reqs += extra
    names = [r.split(";")[0].split("[")[0].strip().split("=")[0].split(">")[0].split("<")[0].lower() for r in reqs]
    assert "torch" not in names, reqs


def test_metadata_is_complete():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    assert project["authors"] and project["readme"] == "README.md"
    assert {"triton", "demo", "bench", "test"} <= set(project["optional-dependencies"])
    for name in ("LICENSE", "CHANGELOG.md", "README.md", os.path.join("fastcnn", "py.typed")):
        assert os.path.getsize(os.path.join(ROOT, name)) >= 0, name
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert "BSD 3-Clause License" in f.readline()


@pytest.mark.slow
def test_pip_wheel_with_build_isolation_fails_fast(tmp_path):
    """The real command: ``pip wheel .`` with pip's isolated build (it installs setuptools from the
    package index into the isolated environment, so this needs the index: --runslow)."""
    src = tmp_path / "src"  # the working tree as it is (a clone would test the last commit)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.so", "__pycache__", "*.egg-info",
                                                              "demo-out", "bench-out", ".hypothesis"))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--use-pep517", "-w",
                          str(tmp_path / "w"), str(src)], capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    log = out.stdout + out.stderr
    assert out.returncode != 0, log
    assert "--no-build-isolation" in log, log
    assert seconds < 120, seconds


def test_public_api_is_annotated():
    """Types (PEP 561): py.typed ships, and every public function, module constructor/forward and
    model builder annotates each parameter and its return."""
    import inspect

    import fastcnn
    import fastcnn.functional as FF
    import fastcnn.models as M
    import fastcnn.nn as fnn

    assert os.path.exists(os.path.join(os.path.dirname(fastcnn.__file__), "py.typed"))
    funcs = [getattr(FF, n) for n in ("conv2d", "conv2d_relu", "conv1x1", "max_pool2d", "add_relu")]
    funcs += [fnn.conv_bn_act, fnn.fold_bn, fnn.clear_fold_cache, fnn.Conv2d.from_conv]
    for cls in (fnn.Conv2d, fnn.Conv2dReLU, fnn.Conv1x1, fnn.MaxPool2d, fnn.AddReLU):
        funcs += [cls.forward] + ([cls.__init__] if "__init__" in vars(cls) else [])
    funcs += [M.MODELS[name] for name in M.MODELS] + [fastcnn.fuse, fastcnn.set_backend, fastcnn.get_backend,
                                                       fastcnn.available_backends, fastcnn.resolve]
    for cls in (M.LeNet5, M.AlexNet, M.GoogLeNet, M.ResNet):
        funcs.append(cls.forward)
    missing = []
    for fn in funcs:
        sig = inspect.signature(fn)
        for name, p in sig.parameters.items():
            if name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and \
                    p.annotation is inspect.Parameter.empty:
                missing.append(f"{fn.__qualname__}({name})")
        if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
            missing.append(f"{fn.__qualname__} -> ?")
    assert not missing, missing
