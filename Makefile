# fastcnn: `make demo` and `make test` work on a fresh machine (they install what is missing).
#
# torch: the active environment's torch is used when it imports. Otherwise torch==2.13.0 is
# installed: on a machine without an NVIDIA GPU from PyTorch's CPU index (a CPU build, not the
# registry's default multi-GB CUDA build); with a GPU, the default build.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Triton as on the GPU machine (torch 2.11+cu130 pins 3.6.0), so the interpreter tests check the
# compiler that runs there; a CUDA build of torch keeps the Triton it pins. numpy below 2.4: Triton
# 3.6's interpreter converts its 1-element loop-bound arrays with int(), which numpy 2.4 rejects
# ("only 0-dimensional arrays can be converted to Python scalars": 187 interpreter tests failed).
TRITON_VERSION ?= 3.6.0
NUMPY_SPEC ?= numpy<2.4
# -rs: every skip with its reason in the summary (which targets and tests this machine cannot run).
PYTEST_ARGS ?= -q -rs
NVCC ?= nvcc
# Each test phase prints its wall time (CI's budget: the default suite within 15 minutes).
TIMED := tools/timed.sh

.PHONY: demo test test-triton install deps torch build cuda-check sm90-check bench-cpu check clean

# The main job (python -m fastcnn demo; outputs in ./demo-out). DEMO_ARGS passes options, e.g.
# make demo DEMO_ARGS="--data ~/mnist --out /tmp/demo" (python -m fastcnn demo --help lists them).
DEMO_ARGS ?=

demo: build
	@$(PYTHON) -c "import sklearn, matplotlib, tqdm" 2>/dev/null || $(PIP) install -q scikit-learn matplotlib tqdm
	$(PYTHON) -m fastcnn demo $(DEMO_ARGS)

# The suite runs twice: the whole of it natively (the C++ CPU backend; Triton targets skipped), then
# the Triton tests on CPU tensors through Triton's interpreter (how CI tests Triton code). Slow or
# duplicated cases are marked slow: PYTEST_ARGS="-q -rs --runslow" runs them too.
PYTEST_TRITON = env TRITON_INTERPRET=1 $(PYTHON) -m pytest tests $(PYTEST_ARGS) -k "triton"

test: build
	@$(TIMED) "pytest: CPU suite" $(PYTHON) -m pytest tests $(PYTEST_ARGS)
	@$(TIMED) "pytest: Triton interpreter suite" $(PYTEST_TRITON)

test-triton: build
	@$(TIMED) "pytest: Triton interpreter suite" $(PYTEST_TRITON)

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
# setuptools >= 77 reads pyproject.toml's license string; a new Python 3.12 venv has no setuptools at all.
deps: torch
	@$(PYTHON) -c "import ninja, pybind11, pytest, hypothesis, sklearn, matplotlib, tqdm" 2>/dev/null || \
	  $(PIP) install -q ninja pybind11 pytest hypothesis scikit-learn matplotlib tqdm
	@$(PYTHON) -c "import sys, numpy; sys.exit(tuple(map(int, numpy.__version__.split('.')[:2])) >= (2, 4))" \
	  2>/dev/null || $(PIP) install -q "$(NUMPY_SPEC)"
	@$(PYTHON) -c "import sys, torch, triton; sys.exit(torch.version.cuda is None and triton.__version__ != '$(TRITON_VERSION)')" \
	  2>/dev/null || $(PIP) install -q "triton==$(TRITON_VERSION)"
	@$(PYTHON) -c "import numpy, triton; print('triton', triton.__version__, '| numpy', numpy.__version__)"
	@$(PYTHON) -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)" 2>/dev/null || \
	  $(PIP) install -q "setuptools>=77"

# An editable install (fastcnn.kernels and fastcnn.bench map to kernels/ and bench/), then an
# incremental in-place build of fastcnn._C (ninja recompiles only what changed; both steps share
# build/temp.*, so a clean clone compiles once).
build: deps
	@(cd / && $(PYTHON) -c "import importlib.util as u, sys; s = u.find_spec('fastcnn'); sys.exit(0 if s and s.origin.startswith('$(CURDIR)/') else 1)") 2>/dev/null || \
	  $(TIMED) "build: pip install -e . (compiles _C)" $(PIP) install --no-build-isolation --no-deps -e .
	@$(TIMED) "build: fastcnn._C (incremental)" $(PYTHON) setup.py -q build_ext --inplace

install: deps
	$(PIP) install --no-build-isolation --no-deps .

# Every CUDA source compiled without a GPU or a CUDA torch (tools/cuda_check.sh says how; it prints
# its time): nvcc for the .cu files, c++ -fsyntax-only for the launchers, MAX_JOBS at a time.
cuda-check:
	@NVCC="$(NVCC)" CXX="$(CXX)" PYTHON="$(PYTHON)" tools/cuda_check.sh

# The Hopper path's translation units (csrc/cuda/sm90/*.cu, CUTLASS SM90), each compiled on its own
# for sm_90a with the pinned CUTLASS headers; fails on serialised wgmma (ptxas C7510), on any spill,
# or when a kernel's SASS lacks HGMMA/UTMALDG. Installs nvidia-cutlass==4.2.0.0 and the 13.2
# cuobjdump/nvdisasm wheels with --no-deps when missing; writes bench/results/sm90_sass.csv. No GPU.
sm90-check:
	$(PYTHON) tools/sm90_check.py

# The CPU op benchmark against PyTorch (oneDNN); rows appended to bench/results/cpu_ops.csv.
bench-cpu: build
	$(PYTHON) -m fastcnn.bench.bench_ops --device cpu --ops conv2d,conv1x1,max_pool2d \
	  --out bench/results/cpu_ops.csv

clean:
	rm -rf build dist *.egg-info fastcnn/_C*.so
