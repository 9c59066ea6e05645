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
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

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


def _rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def extensions():
    debug = _env_flag("FASTCNN_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags = opt + ["-std=c++17", "-fvisibility=hidden"]
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


setup(
    name="fastcnn",
    version="0.1.0",
    description="Fused CNN kernels (conv+bias+residual+ReLU, 1x1 GEMM conv, max-pool, add+ReLU) "
                "for PyTorch, in C++ (CPU), CUDA C++ and Triton",
    packages=find_packages(include=["fastcnn", "fastcnn.*"]) + ["fastcnn.kernels", "fastcnn.bench"],
    package_dir={"fastcnn": "fastcnn", "fastcnn.kernels": "kernels", "fastcnn.bench": "bench"},
    package_data={"fastcnn.kernels": ["configs/*.json"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": _BuildExt},
    python_requires=">=3.10",
    # torch is deliberately not listed: pip would otherwise replace the user's torch build (a CPU or
    # a specific CUDA build) with the registry's default one. The Makefile installs it when missing.
    install_requires=["numpy"],
    extras_require={
        "triton": ["triton"],
        "demo": ["scikit-learn", "matplotlib", "tqdm"],
        "bench": ["matplotlib", "tqdm"],
        "test": ["pytest", "hypothesis"],
    },
    entry_points={"console_scripts": ["fastcnn-bench=fastcnn.__main__:bench_main"]},
)
