# fastcnn: `make demo` and `make test` work on a fresh machine (they install what is missing).
#
# torch: the active environment's torch is used when it imports. Otherwise torch==2.13.0 is
# installed: on a machine without an NVIDIA GPU from PyTorch's CPU index (a CPU build, not the
# registry's default multi-GB CUDA build); with a GPU, the default build.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?= -q
NVCC ?= nvcc

.PHONY: demo test test-triton install deps torch build cuda-check cuda-sim bench-cpu check clean

# The main job (python -m fastcnn demo; outputs in ./demo-out). DEMO_ARGS passes options, e.g.
# make demo DEMO_ARGS="--data ~/mnist --out /tmp/demo" (python -m fastcnn demo --help lists them).
DEMO_ARGS ?=

demo: build
	@$(PYTHON) -c "import sklearn, matplotlib, tqdm" 2>/dev/null || $(PIP) install -q scikit-learn matplotlib tqdm
	$(PYTHON) -m fastcnn demo $(DEMO_ARGS)

test: build cuda-sim
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-triton

# The Triton kernels on CPU tensors through Triton's interpreter (how CI tests Triton code).
test-triton: build
	TRITON_INTERPRET=1 $(PYTHON) -m pytest tests $(PYTEST_ARGS) -k "triton"

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
	@$(PYTHON) -c "import ninja, pybind11, numpy, pytest, hypothesis, triton, sklearn, matplotlib, tqdm" 2>/dev/null || \
	  $(PIP) install -q ninja pybind11 numpy pytest hypothesis triton scikit-learn matplotlib tqdm

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

# cuda-sim: the CUDA kernels and launchers compiled by the host compiler against a SIMT emulation
# (fastcnn._C_cudasim; incremental, ninja). Skipped with the reason when no C++ compiler or no CUDA
# headers are found; FASTCNN_SIM_ASAN_BUILD=1 also builds the AddressSanitizer variant. Not part
# of `make demo` or of `pip install`.
cuda-sim: build
	@t0=$$(date +%s); $(PYTHON) tools/build_cudasim.py $(if $(filter 1,$(FASTCNN_SIM_ASAN_BUILD)),--asan) || exit 1; \
	  echo "cuda-sim: build step $$(( $$(date +%s) - t0 )) s"

# The CPU op benchmark against PyTorch (oneDNN); rows appended to bench/results/cpu_ops.csv.
bench-cpu: build
	$(PYTHON) -m fastcnn.bench.bench_ops --device cpu --ops conv2d,conv1x1,max_pool2d \
	  --out bench/results/cpu_ops.csv

clean:
	rm -rf build dist *.egg-info fastcnn/_C*.so
