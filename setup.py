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
"""

import glob
import os
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


def _system_includes():
    return [f for d in include_paths() for f in ("-isystem", d)]


def _rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


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
        return [CUDAExtension("fastcnn._C", sources, include_dirs=include_dirs,
                              define_macros=[("FASTCNN_WITH_CUDA", "1")],
                              extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                              extra_link_args=link_flags)]
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
