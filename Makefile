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

.PHONY: demo test test-triton install deps torch build cuda-check bench-cpu check clean

demo: build
	@$(PYTHON) -c "import sklearn, matplotlib, tqdm" 2>/dev/null || $(PIP) install -q scikit-learn matplotlib tqdm
	$(PYTHON) -m fastcnn demo

test: build
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

deps: torch
	@$(PYTHON) -c "import ninja, pybind11, numpy, pytest, hypothesis, triton" 2>/dev/null || \
	  $(PIP) install -q ninja pybind11 numpy pytest hypothesis triton

# An editable install (fastcnn.kernels and fastcnn.bench map to kernels/ and bench/), then an
# incremental in-place build of fastcnn._C (ninja recompiles only what changed).
build: deps
	@(cd / && $(PYTHON) -c "import importlib.util as u, sys; s = u.find_spec('fastcnn'); sys.exit(0 if s and s.origin.startswith('$(CURDIR)/') else 1)") 2>/dev/null || \
	  $(PIP) install --no-build-isolation --no-deps -e .
	$(PYTHON) setup.py -q build_ext --inplace

install: deps
	$(PIP) install --no-build-isolation --no-deps .

# Every .cu compiled by nvcc for sm_80 and sm_90: device code is torch-free, so this needs no GPU
# and no CUDA torch.
cuda-check:
	@files=$$(ls csrc/cuda/*.cu 2>/dev/null); \
	if [ -z "$$files" ]; then echo "cuda-check: no .cu files"; exit 0; fi; \
	for f in $$files; do \
	  echo "nvcc $$f (sm_80, sm_90)"; \
	  $(NVCC) -std=c++17 -O3 --expt-relaxed-constexpr -Icsrc -Xcompiler -Wall \
	    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
	    -c $$f -o /tmp/fastcnn_cuda_check_$$(basename $$f .cu).o || exit 1; \
	done; echo "cuda-check: OK"

# The CPU op benchmark against PyTorch (oneDNN); rows appended to bench/results/cpu_ops.csv.
bench-cpu: build
	$(PYTHON) -m fastcnn.bench.bench_ops --device cpu --ops conv2d,conv1x1,max_pool2d \
	  --out bench/results/cpu_ops.csv

clean:
	rm -rf build dist *.egg-info fastcnn/_C*.so
