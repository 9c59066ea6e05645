"""GPU validation in one command: build, full test suite, compute-sanitizer, one validation record.

    python3 tools/gpu_validate.py --out $OUT                # everything
    python3 tools/gpu_validate.py --out $OUT --skip-build   # the package is already installed

Steps (each logged under --out):
1. ``pip install --no-build-isolation --no-deps .`` (CUDAExtension; TORCH_CUDA_ARCH_LIST defaults to
   the visible GPU) -> build.log
2. the whole test suite with ``--runslow`` (CPU, cuda and triton backends on CUDA tensors, every
   dtype and layout, the networks' layers, the fuzz) -> pytest.log, junit.xml
3. ``compute-sanitizer --tool memcheck`` over the op tests on CUDA tensors (both backends), and
   ``--tool racecheck`` over the cuda backend's conv tests (shared-memory kernels) -> memcheck.log,
   racecheck.log
4. one JSON line appended to <out>/validation.jsonl:
   {"timestamp","git_sha","device","torch","triton","cuda","passed","failed","skipped","sanitizer_errors"}
   (copy it into bench/results/validation.jsonl and commit it).
Tests run from a scratch directory so that the installed package, not the source tree, is imported.

The device tool allows 10 minutes per command: split the steps over calls on the warm machine.
junit.xml and the sanitizer logs are kept in --state (default build/gpu-validate, which survives
between calls) and copied to --out; the record is appended once the state holds both:

    python3 tools/gpu_validate.py --out $OUT --skip-tests --skip-sanitizer          # build
    python3 tools/gpu_validate.py --out $OUT --skip-build --skip-sanitizer --timeout 560  # tests
    python3 tools/gpu_validate.py --out $OUT --skip-build --skip-tests --git-sha SHA # sanitizer + record

The long GPU fuzz (tests/test_fuzz.py::test_fuzz_long_gpu, 10,000 examples per op and backend)
can be capped with FASTCNN_FUZZ_EXAMPLES=<n> in the environment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OP_TESTS = ["tests/test_conv2d.py", "tests/test_conv1x1.py", "tests/test_max_pool2d.py", "tests/test_add_relu.py"]


def sh(cmd, log, env=None, cwd=None, timeout=None):
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout).returncode
        except subprocess.TimeoutExpired:  # a step past its budget is a failure on record, not a crash
            f.write(f"\nTIMEOUT after {timeout} s\n")
            rc = 124
    print(f"[{time.time() - t0:6.1f}s] rc={rc} {' '.join(cmd)[:150]}", flush=True)
    return rc


def git_sha():
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def junit_counts(path):
    if not os.path.exists(path):
        return 0, 1, 0
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return total - failed - skipped, failed, skipped


def sanitizer_errors(log):
    """Sum of 'ERROR SUMMARY: N errors' lines; a sanitizer that did not run counts as one error."""
    if not os.path.exists(log):
        return 1
    text = open(log, errors="replace").read()
    found = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    return sum(int(n) for n in found) if found else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-sanitizer", action="store_true")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments for the full suite")
    ap.add_argument("--timeout", type=int, default=3000, help="seconds per step")
    ap.add_argument("--git-sha", default=None, help="commit under test (the device copy has no .git)")
    ap.add_argument("--state", default=os.path.join(REPO, "build", "gpu-validate"),
                    help="junit.xml and sanitizer logs kept between calls (split runs)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.state, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 8)))
    env.pop("TRITON_INTERPRET", None)
    py = sys.executable

    if not a.skip_build:
        rc = sh([py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", "."],
                os.path.join(a.out, "build.log"), env=env, cwd=REPO, timeout=a.timeout)
        if rc:
            print("build failed: see build.log")
            return rc

    scratch = tempfile.mkdtemp(prefix="fastcnn-val-")
    info = subprocess.run([py, "-c", "import json, torch, fastcnn; import triton; print(json.dumps({"
                           "'device': torch.cuda.get_device_name(), 'torch': torch.__version__, "
                           "'triton': triton.__version__, 'cuda': torch.version.cuda, "
                           "'with_cuda': fastcnn._C.with_cuda, 'backends': fastcnn.available_backends()}))"],
                          capture_output=True, text=True, cwd=scratch, env=env)
    if info.returncode:
        print(info.stderr)
        return 1
    facts = json.loads(info.stdout.strip().splitlines()[-1])
    print("facts:", facts, flush=True)

    junit = os.path.join(a.state, "junit.xml")
    if not a.skip_tests:
        if os.path.exists(junit):
            os.remove(junit)
        cmd = [py, "-m", "pytest", os.path.join(REPO, "tests"), "-q", "-p", "no:cacheprovider", "--runslow",
               f"--junitxml={junit}"] + shlex.split(a.pytest_args)
        sh(cmd, os.path.join(a.out, "pytest.log"), env=env, cwd=scratch, timeout=a.timeout)
        if os.path.exists(junit):
            shutil.copy(junit, a.out)
    passed, failed, skipped = junit_counts(junit) if os.path.exists(junit) else (None, None, None)
    if passed is not None:
        print(f"tests: {passed} passed, {failed} failed, {skipped} skipped", flush=True)

    san = None
    if not a.skip_sanitizer:
        tests = [os.path.join(REPO, t) for t in OP_TESTS]
        mem = ["compute-sanitizer", "--tool", "memcheck", "--print-limit", "50", py, "-m", "pytest", *tests, "-q",
               "-p", "no:cacheprovider", "-x", "-k", "cuda and not gradcheck and not compile"]
        sh(mem, os.path.join(a.state, "memcheck.log"), env=env, cwd=scratch, timeout=a.timeout)
        race = ["compute-sanitizer", "--tool", "racecheck", "--print-limit", "50", py, "-m", "pytest",
                os.path.join(REPO, "tests/test_conv2d.py"), os.path.join(REPO, "tests/test_conv1x1.py"), "-q",
                "-p", "no:cacheprovider", "-x", "-k", "configs and cuda and not triton"]
        sh(race, os.path.join(a.state, "racecheck.log"), env=env, cwd=scratch, timeout=a.timeout)
        for log in ("memcheck.log", "racecheck.log"):
            shutil.copy(os.path.join(a.state, log), a.out)
    if os.path.exists(os.path.join(a.state, "memcheck.log")):
        san = sanitizer_errors(os.path.join(a.state, "memcheck.log")) + \
            sanitizer_errors(os.path.join(a.state, "racecheck.log"))
        print(f"sanitizer errors: {san}", flush=True)

    record = {"timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git_sha": a.git_sha or git_sha(),
              "device": facts["device"], "torch": facts["torch"], "triton": facts["triton"], "cuda": facts["cuda"],
              "passed": passed, "failed": failed, "skipped": skipped, "sanitizer_errors": san}
    if os.path.exists(junit) and san is not None:  # a complete validation: suite + sanitizer
        with open(os.path.join(a.out, "validation.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
    print("RECORD " + json.dumps(record))
    return 0 if not failed and not san else 1


if __name__ == "__main__":
    sys.exit(main())
