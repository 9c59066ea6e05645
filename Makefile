# fastcnn: `make demo` and `make test` work on a fresh machine (they install what is missing).
#
# torch: the active environment's torch is used when it imports. Otherwise torch==2.13.0 is
# installed: on a machine without an NVIDIA GPU from PyTorch's CPU index (a CPU build, not the
# registry's default multi-GB CUDA build); with a GPU, the default build.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0
# Triton as on the GPU machine (torch 2.11+cu130 pins 3.6.0), so the interpreter tests and the AOT
# check test the compiler that runs there; a CUDA build of torch keeps the Triton it pins. numpy
# below 2.4: Triton 3.6's interpreter converts its 1-element loop-bound arrays with int(), which
# numpy 2.4 rejects ("only 0-dimensional arrays can be converted to Python scalars").
TRITON_VERSION ?= 3.6.0
NUMPY_SPEC ?= numpy<2.4
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?= -q
NVCC ?= nvcc

.PHONY: demo test test-triton triton-aot triton-aot-full install deps torch build cuda-check bench-cpu check clean

# The main job (python -m fastcnn demo; outputs in ./demo-out). DEMO_ARGS passes options, e.g.
# make demo DEMO_ARGS="--data ~/mnist --out /tmp/demo" (python -m fastcnn demo --help lists them).
DEMO_ARGS ?=

demo: build
	@$(PYTHON) -c "import sklearn, matplotlib, tqdm" 2>/dev/null || $(PIP) install -q scikit-learn matplotlib tqdm
	$(PYTHON) -m fastcnn demo $(DEMO_ARGS)

test: build
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-triton

# The Triton kernels on CPU tensors through Triton's interpreter (how CI tests Triton code).
test-triton: build
	TRITON_INTERPRET=1 $(PYTHON) -m pytest tests $(PYTEST_ARGS) -k "triton"

# Every Triton kernel variant the launchers pick for the four networks (and every candidate config
# on ResNet-50 and LeNet-5) compiled for sm_90a and sm_80 without a GPU: fails on a compile error,
# a spill, shared memory over the limit, a tensor-core tile without wgmma on sm_90, or a table
# that differs from bench/results/triton_aot.csv. triton-aot-full: every config on every layer,
# every variant compiled (bench/results/triton_aot_full.csv).
TRITON_AOT_ARGS ?= --check
triton-aot: build
	$(PYTHON) tools/triton_aot.py $(TRITON_AOT_ARGS)

triton-aot-full: build
	$(PYTHON) tools/triton_aot.py --full

check: build
	$(PYTHON) -m fastcnn check

torch:
	@$(PYTHON) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    $(PIP) install "$(TORCH_SPEC)"; \
	  else \
	    $(PIP) install --retries 1 "$(TORCH_SPEC)" --extra-index-url $(TORCH_CPU_INDEX); \
	  fi; }
	@$(PYTHON) -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda)"

# Build and test dependencies; scikit-learn, matplotlib and tqdm are optional for the library but
# the tests run the demo (digits data, the ablation plot).
deps: torch
	@$(PYTHON) -c "import ninja, pybind11, pytest, hypothesis, sklearn, matplotlib, tqdm" 2>/dev/null || \
	  $(PIP) install -q ninja pybind11 pytest hypothesis scikit-learn matplotlib tqdm
	@$(PYTHON) -c "import sys, numpy; sys.exit(tuple(map(int, numpy.__version__.split('.')[:2])) >= (2, 4))" \
	  2>/dev/null || $(PIP) install -q "$(NUMPY_SPEC)"
	@$(PYTHON) -c "import sys, torch, triton; sys.exit(torch.version.cuda is None and triton.__version__ != '$(TRITON_VERSION)')" \
	  2>/dev/null || $(PIP) install -q "triton==$(TRITON_VERSION)"
	@$(PYTHON) -c "import numpy, triton; print('triton', triton.__version__, '| numpy', numpy.__version__)"

# An editable install (fastcnn.kernels and fastcnn.bench map to kernels/ and bench/), then an
# incremental in-place build of fastcnn._C (ninja recompiles only what changed).
build: deps
	@(cd / && $(PYTHON) -c "import importlib.util as u, sys; s = u.find_spec('fastcnn'); sys.exit(0 if s and s.origin.startswith('$(CURDIR)/') else 1)") 2>/dev/null || \
	  $(PIP) install --no-build-isolation --no-deps -e .
	$(PYTHON) setup.py -q build_ext --inplace

install: deps
	$(PIP) install --no-build-isolation --no-deps .

# Every .cu compiled by nvcc for sm_80 and sm_90: device code is torch-free, so this needs no GPU
# and no CUDA torch. Then the torch-aware launchers csrc/cuda/*.cpp are syntax-checked by the host
# compiler against this torch's headers and the CUDA headers (CUDA_HOME, default /usr/local/cuda),
# third-party headers as -isystem so -Wall -Wextra judge fastcnn's code only. A CPU-only torch lacks
# the generated c10/cuda/impl/cuda_cmake_macros.h: a stub (build/cuda-check-shim, searched after
# torch's own include dirs) stands in for it.
cuda-check:
	@files=$$(ls csrc/cuda/*.cu 2>/dev/null); \
	if [ -z "$$files" ]; then echo "cuda-check: no .cu files"; exit 0; fi; \
	for f in $$files; do \
	  echo "nvcc $$f (sm_80, sm_90)"; \
	  $(NVCC) -std=c++17 -O3 --expt-relaxed-constexpr -Icsrc -Xcompiler -Wall \
	    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
	    -c $$f -o /tmp/fastcnn_cuda_check_$$(basename $$f .cu).o || exit 1; \
	done; \
	cpps=$$(ls csrc/cuda/*.cpp 2>/dev/null); \
	if [ -n "$$cpps" ]; then \
	  inc=$$($(PYTHON) -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-isystem ' + p for p in include_paths()))") || exit 1; \
	  shim=build/cuda-check-shim; mkdir -p $$shim/c10/cuda/impl; \
	  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > $$shim/c10/cuda/impl/cuda_cmake_macros.h; \
	  for f in $$cpps; do \
	    echo "c++ -fsyntax-only $$f"; \
	    $(CXX) -std=c++17 -fsyntax-only -Wall -Wextra -DFASTCNN_WITH_CUDA -Icsrc $$inc -isystem $$shim \
	      -isystem $${CUDA_HOME:-/usr/local/cuda}/include $$f || exit 1; \
	  done; \
	fi; echo "cuda-check: OK"

# The CPU op benchmark against PyTorch (oneDNN); rows appended to bench/results/cpu_ops.csv.
bench-cpu: build
	$(PYTHON) -m fastcnn.bench.bench_ops --device cpu --ops conv2d,conv1x1,max_pool2d \
	  --out bench/results/cpu_ops.csv

clean:
	rm -rf build dist *.egg-info fastcnn/_C*.so
