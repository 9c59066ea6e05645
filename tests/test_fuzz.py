"""Property-based fuzz (hypothesis) of every op, forward and backward, against torch.nn.functional in
float64 on every backend that can run here (tests/fuzz_strategies.py holds the strategies, the
checkers and the ci/long profiles).

    python -m pytest tests/test_fuzz.py                                  # ci profile (CPU)
    TRITON_INTERPRET=1 python -m pytest tests/test_fuzz.py               # + Triton through the interpreter
    FASTCNN_FUZZ_PROFILE=long python -m pytest tests/test_fuzz.py        # 10,000 examples per op and backend
    python -m pytest tests/test_fuzz.py --runslow -k long_gpu            # GPU: the long fuzz on cuda/triton-cuda
"""

from __future__ import annotations

import pytest

from conftest import BACKEND_DEVICES
from fuzz_strategies import OPS, run_fuzz

# numpy (Triton's interpreter) warns on inf - inf and overflow: the special values are drawn on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

GPU_BACKEND_DEVICES = [p for p in BACKEND_DEVICES if p.values[0][1] == "cuda"]


@pytest.mark.parametrize("op", OPS)
def test_fuzz(op, backend_device):
    run_fuzz(op, backend_device)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_fuzz_long_gpu(op, backend_device):
    run_fuzz(op, backend_device, profile="long")
