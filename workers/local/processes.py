"""Managed subprocesses (pods, Prometheus, proxies, controllers; the tests' servers): output captured to a file,
always terminated (then killed) at teardown.

Each process gets its own session (process group), so stopping it also ends whatever it spawned, and only what
this runner started is ever signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ManagedProcess:
    """One subprocess whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, popen: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr interleaved)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)  # the group we created with start_new_session=True

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process group while its leader runs (never to a group id recycled later)."""
        if self.popen.poll() is None:
            self._signal_group(sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit status.

        The group is signalled only while its leader is alive or was reaped by this very call, so a group id
        recycled long after our process ended is never touched.
        """
        if self.popen.poll() is not None:
            return self.popen.returncode
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:  # not gone even after SIGKILL (a loaded machine): report, go on
                return None
        self._signal_group(signal.SIGKILL)  # children that outlived the leader (same group, just reaped)
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (a crash, not a shutdown)."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)
        return self.popen.wait(timeout=10.0)

    def wait(self, timeout_s: float) -> int:
        return self.popen.wait(timeout=timeout_s)


class ProcessRunner:
    """Starts subprocesses with logs under ``log_dir``; ``stop_all`` ends every one of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[ManagedProcess] = []
        # Last resort when pytest exits without running fixture teardown (our processes have their own session,
        # so a Ctrl-C in the terminal does not reach them). Unregistered by stop_all.
        atexit.register(self.stop_all)

    def start(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> ManagedProcess:
        """Start ``argv``; ``env`` entries are added to the current environment."""
        base = name or Path(argv[0]).name
        index = sum(1 for p in self.processes if p.name.split("#")[0] == base)
        name = f"{base}#{index}" if index else base
        log_path = self.log_dir / f"{name.replace('#', '-')}.log"
        full_env = {**os.environ, **(env or {})}
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}  [{time.strftime('%H:%M:%S')}]\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        proc = ManagedProcess(name, argv, log_path, popen)
        self.processes.append(proc)
        return proc

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every process, newest first; never raises for one that already exited."""
        try:
            for proc in reversed(self.processes):
                proc.stop(timeout_s)
        finally:
            atexit.unregister(self.stop_all)

    def report(self, lines: int = 40) -> str:
        """Log tails of every process, for a failing test's output."""
        parts = []
        for proc in self.processes:
            parts.append(f"----- {proc.name} (pid {proc.pid}, rc {proc.returncode}) {proc.log_path} -----")
            parts.append(proc.tail(lines))
        return "\n".join(parts)
