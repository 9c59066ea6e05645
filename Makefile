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

.PHONY: demo test test-triton triton-aot triton-aot-full install deps torch build cuda-check sass-report sm90-check cuda-sim bench-cpu check clean

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

# Then the cuda-sim phase (make cuda-sim, below): CUDA_SIM=0 leaves it out (.ci/run runs it as its
# own step).
CUDA_SIM ?= 1

test: build
	@$(TIMED) "pytest: CPU suite" $(PYTHON) -m pytest tests $(PYTEST_ARGS) -m "not cudasim"
	@$(TIMED) "pytest: Triton interpreter suite" $(PYTEST_TRITON)
	@$(if $(filter 1,$(CUDA_SIM)),$(MAKE) --no-print-directory cuda-sim,echo "cuda-sim: left out (CUDA_SIM=0)")

test-triton: build
	@$(TIMED) "pytest: Triton interpreter suite" $(PYTEST_TRITON)

# Every Triton kernel variant the launchers pick for the four networks (and every candidate config
# on ResNet-50 and LeNet-5) compiled for sm_90a and sm_80 without a GPU: fails on a compile error,
# a spill, shared memory over the limit, a tensor-core tile without wgmma on sm_90, or a table
# that differs from bench/results/triton_aot.csv. --check (CI) compiles the new or changed variants
# and 240 committed rows drawn per commit; `make triton-aot TRITON_AOT_ARGS=` compiles them all and
# rewrites the table. triton-aot-full: every config on every layer (bench/results/triton_aot_full.csv).
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

# The main loop of every tensor-core instantiation (conv_kmajor/conv_wgrad kernels) read from the
# SASS of cuda-check's objects (build/cuda-check; compiled here if missing): instructions per HMMA,
# HMMA share, registers, spills, shared memory, CTAs/SM; rows labelled SASS_LABEL (default
# "current") in bench/results/sass_mainloop.csv, other labels kept; lists the instantiations that
# spill (SASS_ARGS=--check fails on them). No GPU.
SASS_LABEL ?= current
SASS_ARGS ?=
sass-report:
	@$(TIMED) "sass-report" $(PYTHON) tools/sass_report.py --compile --label $(SASS_LABEL) $(SASS_ARGS)

# The Hopper path's translation units (csrc/cuda/sm90/*.cu, CUTLASS SM90), each compiled on its own
# for sm_90a with the pinned CUTLASS headers; fails on serialised wgmma (ptxas C7510), on any spill,
# or when a kernel's SASS lacks HGMMA/UTMALDG. Installs nvidia-cutlass==4.2.0.0 and the 13.2
# cuobjdump/nvdisasm wheels with --no-deps when missing; writes bench/results/sm90_sass.csv. No GPU.
sm90-check:
	$(PYTHON) tools/sm90_check.py

# cuda-sim: the CUDA kernels and launchers compiled by the host compiler against a SIMT emulation
# (fastcnn._C_cudasim and its AddressSanitizer variant _C_cudasim_asan; incremental, ninja), then
# every test marked cudasim (the op, fuzz, error and numerics tests on the targets cuda-sim and
# cuda-sim-rev, tests/test_cuda_sim.py in three orders, LeNet-5), then the op, fuzz, error and
# numerics tests' cuda-sim cases once more under ASan (one order; the process preloads the ASan
# runtime). Skipped with the reason when no C++ compiler or no CUDA headers are found, an error
# with FASTCNN_SIM_REQUIRE=1 (CI, where nvcc is). FASTCNN_SIM_ASAN_BUILD=0 builds and runs without
# the ASan variant. Not part of `make demo` or of `pip install`.
FASTCNN_SIM_ASAN_BUILD ?= 1
CUDASIM_TESTS ?= tests
# Under ASan (one order): the op tests, the fuzz at its CI budget, the error and numerics tests (issue 13;
# fuzz + errors + numerics add ~45 s: 134 passed here), the in-place ops' kernel tests (issue 18).
CUDASIM_ASAN_TESTS ?= tests/test_conv2d.py tests/test_conv1x1.py tests/test_max_pool2d.py tests/test_add_relu.py \
  tests/test_fuzz.py tests/test_errors.py tests/test_numerics.py tests/test_fused_cuda_sim.py tests/test_fused_ops.py
ASAN_PRELOAD = $(shell $(CXX) -print-file-name=libasan.so 2>/dev/null) $(shell $(CXX) -print-file-name=libstdc++.so.6 2>/dev/null)
ASAN_ENV = env FASTCNN_SIM_ASAN=1 ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$(ASAN_PRELOAD)"
# The ASan phase fails unless the ASan module is the one that loads (else its cases would skip).
export CUDASIM_ASAN_LOADS = import sys, fastcnn._cudasim as s; ok = s.load() is not None and \
  s.module_name().endswith("asan"); print("cuda-sim ASan:", "fastcnn." + s.module_name() if ok else s.ERROR); sys.exit(not ok)

cuda-sim: build
	@$(TIMED) "build: fastcnn._C_cudasim" $(PYTHON) tools/build_cudasim.py \
	  $(if $(filter 1,$(FASTCNN_SIM_ASAN_BUILD)),--asan) $(if $(filter 1,$(FASTCNN_SIM_REQUIRE)),--require)
	@if $(PYTHON) -c "import sys, fastcnn._cudasim as s; sys.exit(s.load() is None)" 2>/dev/null; then \
	  $(TIMED) "pytest: cuda-sim (fwd + rev)" $(PYTHON) -m pytest $(CUDASIM_TESTS) $(PYTEST_ARGS) -m cudasim || exit 1; \
	  if [ "$(FASTCNN_SIM_ASAN_BUILD)" = 1 ]; then \
	    $(ASAN_ENV) $(PYTHON) -c "$$CUDASIM_ASAN_LOADS" || exit 1; \
	    $(TIMED) "pytest: cuda-sim under ASan" $(ASAN_ENV) $(PYTHON) -m pytest $(CUDASIM_ASAN_TESTS) \
	      $(PYTEST_ARGS) -k "cuda-sim and not cuda-sim-rev" || exit 1; \
	  fi; \
	else \
	  echo "cuda-sim: tests skipped: fastcnn._C_cudasim was not built (see above)"; \
	  [ "$(FASTCNN_SIM_REQUIRE)" != 1 ] || exit 1; \
	fi

# The CPU op benchmark against PyTorch (oneDNN); rows appended to bench/results/cpu_ops.csv.
bench-cpu: build
	$(PYTHON) -m fastcnn.bench.bench_ops --device cpu --ops conv2d,conv1x1,max_pool2d \
	  --out bench/results/cpu_ops.csv

clean:
	rm -rf build dist *.egg-info fastcnn/_C*.so
