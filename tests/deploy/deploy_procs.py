"""Helpers to run Flower's CLIs in tests: environment, free ports, processes, polling.

Every process a test starts is tracked and stopped by PID (SIGTERM, then SIGKILL after
a grace period), together with the descendants it spawned; nothing is stopped by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APP_PARTS = ("pyproject.toml", "clients", "strategies")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flwr_env(flwr_home: Path, **extra: str) -> dict[str, str]:
    """Environment for Flower's CLIs: private FLWR_HOME, offline, flrd importable.

    Runtime dependency installation is off (it would run ``uv sync`` against PyPI),
    and the repo root is on PYTHONPATH so the App's ``clients``/``strategies`` find the
    ``flrd`` core (the FAB carries only the App's own folders).
    """
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
        "RAY_DEDUP_LOGS": "0",
        **extra,
    })
    return env


def copy_app(dst: Path) -> Path:
    """Copy the Flower App (pyproject.toml, clients/, strategies/) to ``dst``.

    ``flwr run`` in 1.41 migrates a legacy ``[tool.flwr.federations]`` section by
    commenting it out in the App's pyproject.toml, so the tests run on a copy and
    never rewrite the repository's file.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for part in APP_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / part)
    return dst


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.5) -> None:
    """Poll ``predicate`` until it is true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def pids_with_marker(marker: str) -> list[int]:
    """PIDs of processes whose command line contains ``marker`` (e.g. a temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first found, grandchildren after)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found.extend(kids)
        frontier.extend(kids)
    return found


def stop_pids(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM each PID, wait up to ``grace`` seconds, SIGKILL what is left."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


class Processes:
    """Long-running processes of one test; :meth:`stop_all` ends them by PID."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[subprocess.Popen] = []
        self.extra_pids: list[int] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Start ``args`` with output to ``<log_dir>/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed by the OS)
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        """Everything process ``name`` wrote so far."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def adopt(self, pids: list[int]) -> None:
        """Also stop ``pids`` (processes a CLI started detached) at the end."""
        self.extra_pids.extend(pids)

    def stop_all(self) -> None:
        """Stop every started or adopted process and its descendants, by PID."""
        roots = [p.pid for p in self.procs] + self.extra_pids
        stop_pids([pid for root in roots for pid in [root, *descendants(root)]])
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def flwr(env: dict[str, str], *args: str, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one ``flwr`` CLI command to completion."""
    return subprocess.run([str(BIN / "flwr"), *args], env=env, cwd=cwd, timeout=timeout,
                          capture_output=True, text=True)


def flwr_json(env: dict[str, str], *args: str, timeout: float = 60) -> dict:
    """Run ``flwr <args> --format json`` and parse its JSON output."""
    done = flwr(env, *args, "--format", "json", timeout=timeout)
    text = done.stdout
    if "{" not in text:
        raise RuntimeError(f"flwr {' '.join(args)} printed no JSON:\n{text}\n{done.stderr}")
    return json.loads(text[text.index("{"):])


def wait_runs_finished(env: dict[str, str], connection: str, timeout: float) -> list[dict]:
    """Poll ``flwr ls`` until every run has finished; return the runs."""
    runs: list[dict] = []

    def finished() -> bool:
        nonlocal runs
        runs = flwr_json(env, "ls", connection).get("runs", [])
        return bool(runs) and all(r["status"].startswith("finished") for r in runs)

    wait_for(finished, timeout, f"the runs on {connection} to finish", interval=2.0)
    return runs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
