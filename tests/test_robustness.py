"""Nothing lost, nothing paid twice, nothing leaked: faults, crashes, resume, cache, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from harness.servers.testserver import TestServer
from tests.conftest import ROOT, read_jsonl, ubench

SAMPLE_ITEMS = 136
FAKE_KEY = "sk-UBENCH-FAKE-KEY-0123456789abcdef"


def run_args(server: TestServer, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", "vllm/test", "--base-url", server.base_url, "--output", str(out),
            "--no-progress", *extra]


def final_records(out: Path) -> dict[str, dict]:
    """The last record of each item, checking no item has two successful records."""
    records = read_jsonl(out / "samples.jsonl")
    ok = Counter(r["item_id"] for r in records if not r["error"])
    assert max(ok.values(), default=1) == 1, "an item was answered twice"
    return {r["item_id"]: r for r in records}


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_faults_at_25_percent_change_nothing(tmp_path):
    with TestServer("random") as clean:
        ubench(*run_args(clean, tmp_path / "clean", "--no-cache"))
    with TestServer("random", fault_rate=0.25, hang_s=5, retry_after_s=0.2) as faulty:
        ubench(*run_args(faulty, tmp_path / "faulty", "--no-cache", "--timeout", "1",
                         "--max-attempts", "12", "--concurrency", "8"))
        stats = faulty.stats
    assert sum(stats.faults.values()) >= 20 and len(stats.faults) >= 5  # every kind was seen
    assert max(stats.answered.values()) == 1  # no item answered twice by the model
    records = final_records(tmp_path / "faulty")
    assert len(records) == SAMPLE_ITEMS and not any(r["error"] for r in records.values())
    assert sum(r["attempts"] > 1 for r in records.values()) >= 20
    assert summary(tmp_path / "faulty")["scorers"] == summary(tmp_path / "clean")["scorers"]
    log = (tmp_path / "faulty" / "run.log").read_text()
    assert "retrying" in log and "rate_limit" in log and "timeout" in log


def test_retry_after_is_honoured(tmp_path):
    with TestServer("random", fault_rate=1.0, faults=("429",), retry_after_s=1.5) as server:
        start = time.monotonic()
        proc = ubench(*run_args(server, tmp_path / "r", "--limit", "1", "--max-attempts", "2"),
                      check=False)
        elapsed = time.monotonic() - start
        assert server.stats.requests == 2
    assert elapsed >= 1.5, "the second attempt came before Retry-After"
    (record,) = read_jsonl(tmp_path / "r" / "samples.jsonl")
    assert record["error"]["type"] == "rate_limit" and record["error"]["attempts"] == 2
    assert proc.returncode == 3 and summary(tmp_path / "r")["n_errors"] == 1  # nothing answered


def test_errors_are_recorded_and_only_they_are_retried_on_rerun(tmp_path):
    out = tmp_path / "run"
    with TestServer("random", fault_rate=0.3, faults=("500",)) as server:
        assert ubench(*run_args(server, out, "--max-attempts", "1"), check=False).returncode == 1
    first = final_records(out)
    errored = {k for k, r in first.items() if r["error"]}
    assert errored and all(first[k]["error"] == {"type": "server", "status": 500, "attempts": 1,
                                                 "message": "HTTP 500: injected 500"}
                           for k in errored)
    s = summary(out)
    assert s["n_errors"] == len(errored) and s["n_scored"] == SAMPLE_ITEMS - len(errored)
    assert s["errors_by_type"] == {"server": len(errored)}
    with TestServer("random") as healthy:
        ubench(*run_args(healthy, out, "--max-attempts", "1"))
        assert healthy.stats.requests == len(errored)
    final = final_records(out)
    assert not any(r["error"] for r in final.values()) and len(final) == SAMPLE_ITEMS
    assert summary(out)["n_errors"] == 0


def test_wrong_key_fails_fast_and_stops_the_run(tmp_path):
    with TestServer("random", require_key="sk-the-right-one") as server:
        proc = ubench(*run_args(server, tmp_path / "r", "--concurrency", "4"),
                      env={"VLLM_API_KEY": FAKE_KEY}, check=False)
        assert server.stats.requests <= 8 + 4  # not retried, and the run stopped
    assert proc.returncode != 0
    assert "Incorrect API key provided" in proc.stderr and "stopping" in proc.stderr
    assert FAKE_KEY not in proc.stderr + proc.stdout


def test_the_api_key_is_never_written_anywhere(tmp_path, private_cache):
    out = tmp_path / "run"
    with TestServer("random", require_key=FAKE_KEY, fault_rate=0.25,
                    faults=("500", "429", "badjson"), retry_after_s=0.05) as server:
        proc = ubench(*run_args(server, out, "--limit", "30", "--max-attempts", "10"),
                      env={"VLLM_API_KEY": FAKE_KEY, "UBENCH_KEY": FAKE_KEY})
        assert max(server.stats.answered.values()) == 1
    with TestServer("random", require_key="sk-other") as wrong:  # the server echoes the key
        bad = ubench(*run_args(wrong, tmp_path / "bad", "--limit", "3", "--api-key-env",
                               "UBENCH_KEY"), env={"UBENCH_KEY": FAKE_KEY}, check=False)
    written = [p for d in (out, tmp_path / "bad", private_cache) for p in d.rglob("*")
               if p.is_file()]
    assert {p.name for p in written} >= {"samples.jsonl", "manifest.json", "run.log"}
    bad_records = read_jsonl(tmp_path / "bad" / "samples.jsonl")
    assert "Incorrect API key provided: [REDACTED]" in bad_records[0]["error"]["message"]
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
    for text in (proc.stdout, proc.stderr, bad.stdout, bad.stderr):
        assert FAKE_KEY not in text
    from harness.adapters import create_adapter

    os.environ["UBENCH_KEY"] = FAKE_KEY
    try:
        adapter = create_adapter("openai/gpt-4o", api_key_env="UBENCH_KEY")
        assert FAKE_KEY not in repr(adapter) and FAKE_KEY not in json.dumps(adapter.describe())
    finally:
        del os.environ["UBENCH_KEY"]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def _interrupted_run(server: TestServer, out: Path, lines: int):
    """Start a run in a subprocess and return once `lines` records are written."""
    args = run_args(server, out, "--concurrency", "4")
    proc = _start(args)
    _wait_for_lines(out / "samples.jsonl", lines, proc)
    return args, proc


def test_kill_9_mid_run_loses_only_requests_in_flight(tmp_path):
    out = tmp_path / "run"
    with TestServer("random", latency_s=0.05) as server:
        args, proc = _interrupted_run(server, out, 40)
        proc.kill()
        proc.wait()
        asked_before = server.stats.requests
        assert asked_before < SAMPLE_ITEMS
        ubench(*args)
        total_asked = server.stats.requests
    records = final_records(out)
    assert len(records) == SAMPLE_ITEMS and not any(r["error"] for r in records.values())
    # the re-run asked only what was not done: at most the 4 requests in flight twice
    assert SAMPLE_ITEMS <= total_asked <= SAMPLE_ITEMS + 4
    assert max(server.stats.by_key.values()) <= 2


def test_ctrl_c_stops_gracefully_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    with TestServer("random", latency_s=0.05) as server:
        args, proc = _interrupted_run(server, out, 20)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "run the same command again to resume" in stderr
        assert "Traceback" not in stderr
        partial = read_jsonl(out / "samples.jsonl")  # every line whole
        assert 20 <= len(partial) < SAMPLE_ITEMS
        ubench(*args)
    assert len(final_records(out)) == SAMPLE_ITEMS


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    with TestServer("random") as server:
        ubench(*run_args(server, out, "--limit", "10"))
        lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
        (out / "samples.jsonl").write_text("".join(lines[:7]) + lines[7][:25])  # a crash mid-write
        ubench(*run_args(server, out, "--limit", "10", "--no-cache"))
        assert server.stats.requests == 10 + 3
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 10 and len({r["item_id"] for r in records}) == 10


def test_a_changed_configuration_is_refused_unless_forced(tmp_path):
    out = tmp_path / "run"
    with TestServer("random") as server:
        ubench(*run_args(server, out, "--limit", "5"))
        proc = ubench(*run_args(server, out, "--limit", "5", "--temperature", "0.7"), check=False)
        assert proc.returncode != 0
        assert "generation changed" in proc.stderr and "--force" in proc.stderr
        proc = ubench(*run_args(server, out, "--limit", "5", "--prompt", "cot"), check=False)
        assert "template changed" in proc.stderr
        ubench(*run_args(server, out, "--limit", "5", "--prompt", "cot", "--force"))
    assert json.loads((out / "manifest.json").read_text())["template"]["name"] == "cot"
    assert len(read_jsonl(out / "samples.jsonl")) == 5


def test_the_cache_answers_repeated_requests_for_free(tmp_path, private_cache):
    with TestServer("random") as server:
        ubench(*run_args(server, tmp_path / "a", "--question-types", "classification"))
        first = server.stats.requests
        ubench(*run_args(server, tmp_path / "b"))  # all types: only the new ones are asked
        assert server.stats.requests - first == SAMPLE_ITEMS - first
        ubench(*run_args(server, tmp_path / "c"))  # the same again: nothing asked
        assert server.stats.requests == SAMPLE_ITEMS
        ubench(*run_args(server, tmp_path / "d", "--no-cache", "--limit", "3"))
        assert server.stats.requests == SAMPLE_ITEMS + 3
    c = read_jsonl(tmp_path / "c" / "samples.jsonl")
    assert all(r["cached"] and r["attempts"] == 0 and len(r["request_sha256"]) == 64 for r in c)
    assert summary(tmp_path / "c")["scorers"] == summary(tmp_path / "b")["scorers"]
    info = ubench("cache", "info").stdout
    assert str(private_cache) in info and f"{SAMPLE_ITEMS} responses" in info
    assert "deleted 136" in ubench("cache", "clear", "--yes").stdout
    assert "0 responses" in ubench("cache", "info").stdout


def test_cache_answers_are_committed_together_and_at_close(tmp_path):
    from harness.run.cache import ResponseCache

    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path, commit_every_s=3600)
    cache.put("k1", {"text": "A"})
    assert cache.get("k1") == {"text": "A"}  # answered from what is not committed yet
    assert ResponseCache(path).get("k1") is None  # another process does not see it yet
    cache.close()
    assert ResponseCache(path).get("k1") == {"text": "A"}
    eager = ResponseCache(path, commit_every_s=0)
    eager.put("k2", {"text": "B"})
    assert ResponseCache(path).get("k2") == {"text": "B"}  # the deadline passed: committed
    eager.close()


def test_the_image_hash_made_at_encoding_gives_the_same_cache_key():
    import io
    from dataclasses import replace

    from PIL import Image

    from harness.adapters.base import ChatRequest, GenerationParams
    from harness.data.images import encode_image
    from harness.run.cache import request_key

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    image = encode_image(buf.getvalue())
    plain = ChatRequest("x", [{"role": "user", "content": [{"type": "image"}]}], image.data_url,
                        GenerationParams(), "AB")
    identity = {"spec": "vllm/m", "base_url": "http://h/v1/"}
    assert request_key(identity, replace(plain, image_url_sha256=image.url_sha256)) == \
        request_key(identity, plain)


def test_bad_rows_become_error_records_and_the_run_goes_on(tmp_path):
    import datasets as hf

    from harness.data.synthetic import all_label_names, make_row, ubench_features

    rng = np.random.default_rng(5)
    rows = [make_row(rng, "kather_et_al_2016", all_label_names()) for _ in range(4)]
    rows[0]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n truncated", "path": "x.png"}
    rows[1]["questions"]["stain"]["answer"] = "not an option"
    rows[2]["questions"]["domain"]["answer_idx"] = 0
    rows[2]["questions"]["domain"]["options"] = ["x", "pathology", "none of the above"]
    data = tmp_path / "data"
    data.mkdir()
    hf.Dataset.from_list(rows, features=ubench_features(all_label_names())).to_parquet(
        str(data / "part.parquet"))
    out = tmp_path / "run"
    with TestServer("random") as server:
        proc = ubench(*run_args(server, out, "--dataset", str(data)), check=False)
    assert proc.returncode == 1  # some items are errors
    records = final_records(out)
    bad_image = [r for r in records.values() if r["image_id"] == rows[0]["image_id"]]
    assert bad_image and all(r["error"]["type"] == "bad_input" and r["error"]["field"] == "image"
                             for r in bad_image)
    assert rows[0]["image_id"] in bad_image[0]["error"]["message"]
    stain = records[f"{rows[1]['image_id']}:stain"]
    assert stain["error"]["field"] == "questions.stain.answer"
    assert "not an option" in stain["error"]["message"]
    domain = records[f"{rows[2]['image_id']}:domain"]
    assert domain["error"] is None and "answer_idx" in domain["data_warning"]
    s = summary(out)
    assert s["bad_input_by_field"] == {"image": len(bad_image), "questions.stain.answer": 1}
    assert s["n_data_warnings"] == 1
    assert s["n_scored"] == len(records) - len(bad_image) - 1
    assert "Skipped for bad input" in proc.stdout
