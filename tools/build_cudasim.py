"""Build fastcnn._C_cudasim (and with --asan fastcnn._C_cudasim_asan): the CUDA kernels and their
torch-aware launchers compiled by the host compiler against cuda-sim's SIMT runtime
(csrc/cuda/sim/simt.h), so they run on CPU tensors. `make cuda-sim` calls this; it is incremental
(ninja, with the compiler's header dependencies).

    python tools/build_cudasim.py [--asan] [--jobs N] [--require]

(--asan is the default with FASTCNN_SIM_ASAN_BUILD=1.)

* kernels: every csrc/cuda/*.cu and csrc/cuda/sim/*.cu as C++ (-x c++ -DFASTCNN_SIMT -O1; -O1 because
  -O0 runs the kernels ~5x slower and -O2 compiles ~2x longer), CUDA headers only, no device pass;
* launchers: the csrc/cuda/*.cpp that cuda-sim runs, with the thin shims of csrc/cuda/aten_utils.h;
  compiled once and shared by both variants (AddressSanitizer is for the kernels' accesses);
* runtime + module: csrc/cuda/sim/*.cpp (the module defines no pybind11 bindings: its controls and
  test kernels are torch ops in the namespace fastcnn_cudasim, so it compiles against ATen only).

Prints "cuda-sim: skipped: <reason>" and exits 0 when no C++ compiler or no CUDA headers are found
(--require makes that an error). Symbols are hidden (-fvisibility=hidden): the module never clashes
with a CUDA build of fastcnn._C in the same process.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADERS = ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h")
# The torch-aware sources cuda-sim compiles (csrc/<name>.cpp): the four op entry points (they register
# fastcnn::_cudasim_<stem> under FASTCNN_SIMT), the conv engine, and the sm90 hooks with their pure
# rule (the sim build never takes the sm90 path: csrc/cuda/sm90_dispatch.cpp). Not _C's router,
# schemas or backend table (csrc/ops.cpp, backend.cpp, fastcnn.cpp): the module uses _C's through
# fastcnn::Services.
LAUNCHERS = ["cuda/conv2d", "cuda/conv1x1", "cuda/max_pool2d", "cuda/add_relu", "cuda/conv_engine",
             "cuda/sm90_dispatch", "sm90_path"]


def cuda_include() -> str | None:
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for c in cands:
        if c and all(os.path.isfile(os.path.join(c, "include", h)) for h in HEADERS):
            return os.path.join(c, "include")
    return None


def skip(reason: str, require: bool) -> None:
    print(f"cuda-sim: skipped: {reason}", flush=True)
    sys.exit(1 if require else 0)


def q(args) -> str:
    return " ".join(shlex.quote(a) for a in args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asan", action="store_true", default=os.environ.get("FASTCNN_SIM_ASAN_BUILD", "0") == "1",
                    help="also build the AddressSanitizer variant _C_cudasim_asan (default: FASTCNN_SIM_ASAN_BUILD=1)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "0") or 0) or (os.cpu_count() or 1))
    ap.add_argument("--require", action="store_true", help="fail instead of skipping when the toolchain is missing")
    args = ap.parse_args()

    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        skip("no C++ compiler (set CXX)", args.require)
    inc = cuda_include()
    if inc is None:
        skip("no CUDA headers (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h; set CUDA_HOME)", args.require)
    try:
        import torch
        from torch.utils.cpp_extension import include_paths, library_paths
    except ImportError as e:
        skip(f"torch does not import ({e})", args.require)
    ninja = shutil.which("ninja")
    ninja_cmd = [ninja] if ninja else [sys.executable, "-m", "ninja"]

    t0 = time.time()
    bdir = os.path.join(HERE, "build", "cudasim")
    os.makedirs(bdir, exist_ok=True)
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    common = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-DFASTCNN_SIMT", abi, "-Wall", "-Wno-unknown-pragmas",
              "-I" + os.path.join(HERE, "csrc"), "-isystem", inc]
    torch_inc = []
    for p in include_paths():
        torch_inc += ["-isystem", p]
    py_inc = ["-isystem", sysconfig.get_paths()["include"]]
    asan_flags = ["-fsanitize=address", "-fno-omit-frame-pointer"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"

    rel = lambda p: os.path.relpath(p, HERE)
    kernels = sorted(glob.glob(os.path.join(HERE, "csrc/cuda/*.cu")) + glob.glob(os.path.join(HERE, "csrc/cuda/sim/*.cu")))
    launchers = [os.path.join(HERE, "csrc", n + ".cpp") for n in LAUNCHERS]
    runtime = os.path.join(HERE, "csrc/cuda/sim/simt.cpp")
    module = os.path.join(HERE, "csrc/cuda/sim/module.cpp")

    lines = [
        "ninja_required_version = 1.3",
        f"cxx = {shlex.quote(cxx)}",
        "rule cxx",
        "  command = $cxx -MMD -MF $out.d $flags -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "  description = c++ $in",
        "rule link",
        "  command = $cxx -shared $in -o $out $ldflags",
        "  description = link $out",
    ]

    def obj(src: str, variant: str) -> str:
        return os.path.join(bdir, variant, rel(src).replace("/", "__") + ".o")

    shared_objs = []
    for src in launchers:
        o = obj(src, "shared")
        lines += [f"build {o}: cxx {src}", f"  flags = {q(common + ['-O1'] + torch_inc)}"]
        shared_objs.append(o)
    libs = []
    for p in library_paths():
        libs += ["-L" + p, "-Wl,-rpath," + p]
    libs += ["-lc10", "-ltorch", "-ltorch_cpu"]
    outputs = []
    for variant in ["plain"] + (["asan"] if args.asan else []):
        extra = asan_flags if variant == "asan" else []
        name = "_C_cudasim_asan" if variant == "asan" else "_C_cudasim"
        objs = list(shared_objs)
        for src in kernels:
            o = obj(src, variant)
            lines += [f"build {o}: cxx {src}", f"  flags = {q(['-x', 'c++'] + common + ['-O1'] + extra)}"]
            objs.append(o)
        o = obj(runtime, variant)
        lines += [f"build {o}: cxx {runtime}", f"  flags = {q(common + ['-O1'] + extra)}"]
        objs.append(o)
        o = obj(module, variant)
        lines += [f"build {o}: cxx {module}",
                  f"  flags = {q(common + ['-O1', '-DTORCH_EXTENSION_NAME=' + name] + torch_inc + py_inc)}"]
        objs.append(o)
        so = os.path.join(HERE, "fastcnn", name + suffix)
        lines += [f"build {so}: link {' '.join(objs)}", f"  ldflags = {q(libs + (['-fsanitize=address'] if extra else []))}"]
        outputs.append(so)
    lines += [f"default {' '.join(outputs)}", ""]
    text = "\n".join(lines)
    path = os.path.join(bdir, "build.ninja")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as fh:
            fh.write(text)
    res = subprocess.run(ninja_cmd + ["-C", bdir, "-j", str(max(1, args.jobs))])
    if res.returncode != 0:
        sys.exit(res.returncode)
    print(f"cuda-sim: built {', '.join(rel(o) for o in outputs)} in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
