"""Build fastcnn and its C++/CUDA extension ``fastcnn._C``.

Install with ``pip install --no-build-isolation .``: the extension compiles against the torch that
is already installed, so pip must not make an isolated build environment and install a second torch
into it (that would pull a different build, often a multi-GB CUDA one, and produce an extension
whose ABI does not match the torch it is imported into).

* ``CppExtension`` (CPU kernels) when the installed torch has no CUDA or nvcc is missing;
* ``CUDAExtension`` (CPU + CUDA kernels) when torch has CUDA and nvcc is found, or when
  ``FASTCNN_FORCE_CUDA=1`` (a GPU-less builder with CUDA torch and nvcc).
* ``FASTCNN_FORCE_CPU=1`` builds the CPU extension even where CUDA is available.
* ``TORCH_CUDA_ARCH_LIST`` selects the GPU targets (default: the visible GPU, else 8.0 and 9.0);
  ``MAX_JOBS`` caps parallel compile jobs (ninja); ``FASTCNN_DEBUG=1`` builds with -O0 -g.
* ``fastcnn._C_sm90``, the Hopper conv kernels (CUTLASS SM90 collectives, csrc/cuda/sm90/), next to a
  CUDA ``_C`` when nvcc >= 12.3, 9.0 or 9.0a is in ``TORCH_CUDA_ARCH_LIST`` and the CUTLASS headers are
  found (``CUTLASS_PATH``, a CUTLASS source root, or the pip package ``nvidia-cutlass==4.2.0.0``, located
  without importing it). Always ``-gencode=arch=compute_90a,code=sm_90a -DNDEBUG``, never ``-G``;
  ``FASTCNN_SM90_BUILD=0`` skips it. Its TUs take ~3.5 GB each: without ``MAX_JOBS`` its parallel jobs
  are capped by the available memory. ``_C`` builds and runs without it.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup


def _no_torch_message():
    """Why torch cannot be imported here, and what to type instead. pip's isolated build environment
    (the default for `pip install .` / `pip wheel .`) hides the installed packages; the interpreter
    outside it, asked without pip's PYTHONPATH/PYTHONNOUSERSITE, says whether torch is installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=os.path.expanduser("~"))
        outside = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        outside = None
    if outside:
        have = (f"torch {outside} is installed for {sys.executable}, but this build runs in pip's isolated "
                "build environment, which cannot see it.")
    else:
        have = ("torch cannot be imported: install it first (README, 'Install'), then build without isolation.")
    return (f"fastcnn's extension compiles against the torch that is already installed. {have}\n"
            "Build without isolation, in the environment that has torch:\n"
            "    pip install --no-build-isolation .        (or: pip wheel --no-build-isolation .)\n"
            "An isolated build would need a second torch inside pip's build environment (often the registry's "
            "multi-GB CUDA build), and the extension would not match the torch it is imported into: torch is "
            "deliberately not a build requirement.")


try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension, include_paths
except ImportError:
    sys.exit("error: " + _no_torch_message())

HERE = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _env_flag("FASTCNN_FORCE_CPU"):
        return False
    if torch.version.cuda is None:  # a CPU-only torch cannot load CUDA kernels
        return False
    if CUDA_HOME is None and shutil.which("nvcc") is None:
        return False
    # As torchvision: build CUDA where a GPU is visible; a GPU-less builder opts in explicitly.
    return torch.cuda.is_available() or _env_flag("FASTCNN_FORCE_CUDA")


def _default_arch_list():
    # torch.utils.cpp_extension reads TORCH_CUDA_ARCH_LIST; when unset it targets every visible GPU,
    # and with no GPU visible it would target a long list of archs (slow builds). We pin a short one.
    if "TORCH_CUDA_ARCH_LIST" in os.environ:
        return
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(f"{a}.{b}" for a, b in caps)
    else:
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"


class _BuildExt(BuildExtension.with_options(use_ninja=True)):
    """Objects always in the tree's build/temp.<platform> (ninja's state there): pip's editable build
    compiles in a throwaway directory, so `make build` on a clean clone (pip install -e ., then
    setup.py build_ext --inplace) compiled every source twice (~2 min each on 2 cores)."""

    def finalize_options(self):
        super().finalize_options()
        build_dir = os.path.join(HERE, "build")
        if not os.path.abspath(self.build_temp).startswith(build_dir + os.sep):
            self.build_temp = os.path.join(build_dir, f"temp.{self.plat_name}-{sys.implementation.cache_tag}")

    # Caps the parallel jobs of fastcnn._C_sm90 by memory (~3.5 GB per CUTLASS TU) unless MAX_JOBS is set.
    def build_extension(self, ext):
        if ext.name != "fastcnn._C_sm90" or "MAX_JOBS" in os.environ:
            return super().build_extension(ext)
        try:
            with open("/proc/meminfo") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
            jobs = max(1, min(os.cpu_count() or 1, int(kb / (3.5 * 1024 * 1024))))
        except (OSError, StopIteration, ValueError):
            jobs = 1
        os.environ["MAX_JOBS"] = str(jobs)
        try:
            return super().build_extension(ext)
        finally:
            del os.environ["MAX_JOBS"]


def _system_includes():
    return [f for d in include_paths() for f in ("-isystem", d)]


def _rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def _nvcc_version():
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError, TypeError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _cutlass_include():
    """CUTLASS's include dirs (include/ and tools/util/include/), or None. The pip package's files are
    located with find_spec, which does not import it (its Python side needs packages we skip)."""
    roots = []
    if os.environ.get("CUTLASS_PATH"):
        roots.append(os.environ["CUTLASS_PATH"])
    spec = importlib.util.find_spec("cutlass_library")
    if spec is not None and spec.submodule_search_locations:
        roots.append(os.path.join(list(spec.submodule_search_locations)[0], "source"))
    for root in roots:
        inc, util = os.path.join(root, "include"), os.path.join(root, "tools", "util", "include")
        if os.path.exists(os.path.join(inc, "cutlass", "cutlass.h")) and os.path.exists(
                os.path.join(util, "cutlass", "util", "packed_stride.hpp")):
            return [inc, util]
    return None


def _sm90_extension():
    """fastcnn._C_sm90, or None with the reason printed (a CUDA _C is built either way)."""
    if os.environ.get("FASTCNN_SM90_BUILD", "1").lower() in ("0", "false", "no", "off"):
        print("fastcnn: FASTCNN_SM90_BUILD=0: skipping fastcnn._C_sm90")
        return None
    arches = re.split(r"[;\s]+", os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
    if not any(a.split("+")[0] in ("9.0", "9.0a") for a in arches):
        print("fastcnn: 9.0 is not in TORCH_CUDA_ARCH_LIST: skipping fastcnn._C_sm90")
        return None
    version = _nvcc_version()
    if version is None or version < (12, 3):
        print(f"fastcnn: nvcc {version} < 12.3: skipping fastcnn._C_sm90")
        return None
    include = _cutlass_include()
    if include is None:
        print("fastcnn: CUTLASS headers not found (pip install --no-deps nvidia-cutlass==4.2.0.0, or set "
              "CUTLASS_PATH): skipping fastcnn._C_sm90")
        return None
    sources = _rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "sm90", "*.cu"))) + ["csrc/cuda/sm90/module.cpp"]
    # Exactly the flags tools/sm90_check.py checks the SASS of; an "arch" flag keeps torch from adding
    # its own -gencode list. No -G or -O0 even with FASTCNN_DEBUG: device asserts and debug code
    # serialise wgmma.
    nvcc_flags = ["-std=c++17", "-O3", "--expt-relaxed-constexpr", "-DNDEBUG", "-DFASTCNN_WITH_SM90",
                  "-gencode=arch=compute_90a,code=sm_90a", "-U__CUDA_NO_HALF_OPERATORS__",
                  "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
                  "-U__CUDA_NO_HALF2_OPERATORS__"]
    cxx_flags = ["-O2", "-std=c++17", "-fvisibility=hidden", "-DNDEBUG",
                 f"-DFASTCNN_SM90_NVCC_MAJOR={version[0]}", f"-DFASTCNN_SM90_NVCC_MINOR={version[1]}"]
    return CUDAExtension("fastcnn._C_sm90", sources, include_dirs=[os.path.join(HERE, "csrc")] + include,
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags})


def extensions():
    debug = _env_flag("FASTCNN_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -Wall for fastcnn's own code; torch's headers as system headers (-isystem, which takes precedence
    # over the -I torch adds): torch 2.13's c10/AutogradState.h alone printed 2 -Wc++20-extensions
    # warnings per translation unit (16 per build), each with its include chain.
    cxx_flags = opt + ["-std=c++17", "-fvisibility=hidden", "-Wall"] + _system_includes()
    # at::parallel_for is a header template: without -fopenmp its `omp parallel` is compiled out and
    # every CPU kernel runs on one thread (while MKL, called from it, opened a 2-thread region per
    # tiny GEMM: LeNet conv1 forward 4.2 ms on 2 threads against 1.0 ms on one). Linking -fopenmp
    # binds libgomp.so.1, which resolves at run time to the copy torch has already loaded.
    link_flags = []
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    sources = _rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")) + glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    include_dirs = [os.path.join(HERE, "csrc")]
    if _want_cuda():
        _default_arch_list()
        sources += _rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")) + glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
        nvcc_flags = opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo",
                            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__"]
        exts = [CUDAExtension("fastcnn._C", sources, include_dirs=include_dirs,
                              define_macros=[("FASTCNN_WITH_CUDA", "1")],
                              extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                              extra_link_args=link_flags)]
        sm90 = _sm90_extension()
        return exts + ([sm90] if sm90 is not None else [])
    return [CppExtension("fastcnn._C", sources, include_dirs=include_dirs,
                         extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)]


# The metadata (name, version, license, dependencies, extras, scripts) is in pyproject.toml.
setup(
    packages=find_packages(include=["fastcnn", "fastcnn.*"]) + ["fastcnn.kernels", "fastcnn.bench"],
    package_dir={"fastcnn": "fastcnn", "fastcnn.kernels": "kernels", "fastcnn.bench": "bench"},
    package_data={"fastcnn": ["py.typed"], "fastcnn.kernels": ["configs/*.json"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": _BuildExt},
)
