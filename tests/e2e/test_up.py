"""``pdscale up`` as a user runs it: everything starts, kubectl sees the pods, and Ctrl-C (SIGINT) stops every
process it started (each in its own process group), leaving none behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import wait_for
from workers.local.processes import ProcessRunner


def _ours(workdir: Path) -> list[str]:
    """Command lines of live processes that mention the workdir (every process pdscale up starts does)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(workdir) in cmdline and int(pid) != os.getpid():
            out.append(f"{pid}: {cmdline[:160]}")
    return out


def test_pdscale_up_starts_everything_and_ctrl_c_leaves_nothing(tmp_path: Path, process_runner: ProcessRunner) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH (scripts/ensure-kubectl.sh installs Debian's package)"
    workdir = tmp_path / "up"
    up = process_runner.start([sys.executable, "-m", "autoscaler.cli", "up", "--workdir", str(workdir),
                               "--startup-s", "1", "--tick-s", "1", "--scrape-s", "0.5", "--window-s", "4",
                               "--controllers", "1"], name="pdscale-up")  # fmt: skip
    wait_for(lambda: "Ctrl-C stops everything." in up.output() or not up.running, 120, "pdscale up to be ready")
    assert up.running, up.tail()
    out = up.output()
    kubeconfig = re.search(r"kubectl --kubeconfig (\S+) get", out)
    assert kubeconfig and "Prometheus" in out and "/v1" in out and "pdscale loadgen --url" in out, out
    assert "leader controller-a" in out, out  # `up` returns once the only controller holds the Lease
    pods = subprocess.run([kubectl, "--kubeconfig", kubeconfig.group(1), "get", "pods", "-o", "wide"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert pods.returncode == 0, pods.stderr
    assert pods.stdout.count("Running") == 2 and pods.stdout.count("1/1") == 2, pods.stdout
    assert len(_ours(workdir)) >= 5, _ours(workdir)  # Prometheus, proxy, controller, two pods

    up.popen.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
    assert up.wait(60) == 0, up.tail()
    deadline = time.monotonic() + 10
    while _ours(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ours(workdir) == []
