"""pytest plugin for tools/gpu_run.py: one JSON line per test outcome in $FASTCNN_PYTEST_LOG, written and
flushed as each test ends, so a run stopped at its time limit keeps every outcome it reached (junit XML
is written only at the end). Loaded with ``-p gpu_pytest_log`` (tools/ on PYTHONPATH). Under xdist the
controller writes (workers forward their reports to it)."""

from __future__ import annotations

import json
import os

_config = None


def pytest_configure(config):
    global _config
    _config = config


def _outcome(report):
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when == "call":
        return report.outcome
    if report.when == "setup" and not report.passed:
        return "skipped" if report.skipped else "error"
    if report.when == "teardown" and report.failed:
        return "error"
    return None


def pytest_runtest_logreport(report):
    path = os.environ.get("FASTCNN_PYTEST_LOG")
    if not path or (_config is not None and hasattr(_config, "workerinput")):
        return
    outcome = _outcome(report)
    if outcome is None:
        return
    row = {"nodeid": report.nodeid, "outcome": outcome, "when": report.when, "seconds": round(report.duration, 3)}
    if outcome in ("failed", "error"):
        row["message"] = str(report.longrepr)[-1500:]
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
