"""The error paths users hit: each gives one clear line naming the item, exits non-zero where the
run cannot go on, prints no traceback, and loses nothing already done."""
from __future__ import annotations

import json
import os
import shutil
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from harness.data.sources import SAMPLE_PATH
from harness.run.retry import retry_after_seconds
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, synthetic_rows, ubench, write_dataset


def no_traceback(proc) -> bool:
    return "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_a_missing_api_key_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("UBENCH_NO_SUCH_KEY", raising=False)
    proc = ubench("run", "--model", "openai/gpt-4o", "--api-key-env", "UBENCH_NO_SUCH_KEY",
                  "--output", str(tmp_path / "r"), "--no-progress", check=False)
    assert proc.returncode != 0 and no_traceback(proc)
    assert "set UBENCH_NO_SUCH_KEY" in proc.stderr
    assert not (tmp_path / "r" / "samples.jsonl").exists() or \
        not (tmp_path / "r" / "samples.jsonl").read_text()


def test_a_managed_server_that_never_becomes_healthy_is_stopped(tmp_path):
    fake = tmp_path / "fake-python"
    marker = tmp_path / "started"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 600\n")
    fake.chmod(0o755)
    out = tmp_path / "r"
    proc = ubench("run", "--model", "vllm/x", "--serve", "--vllm-python", str(fake),
                  "--serve-timeout", "2", "--output", str(out), "--no-progress", check=False,
                  subprocess_=True, timeout=60)
    assert proc.returncode != 0 and no_traceback(proc)
    assert "was not healthy after 2 s" in proc.stderr and "--serve-timeout" in proc.stderr
    assert marker.exists() and (out / "vllm-server.log").exists()
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    left = []
    for pid in pids:
        try:
            if str(fake) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                left.append(pid)
        except OSError:
            pass
    assert not left, "the fake server outlived the run"


def test_a_corrupt_row_mid_stream_fails_only_its_items(tmp_path):
    rows = synthetic_rows(11, 5)
    rows[2]["image"] = {"bytes": b"\xff\xd8\xff not a JPEG at all", "path": "x.jpg"}
    rows[2]["questions"]["stain"]["options"] = None
    data = write_dataset(rows, tmp_path / "data")
    out = tmp_path / "run"
    proc = ubench("run", "--model", "random", "--dataset", str(data), "--output", str(out),
                  "--no-progress", check=False)
    assert proc.returncode == 1 and no_traceback(proc)  # the run ended; some items are errors
    records = read_jsonl(out / "samples.jsonl")
    bad = [r for r in records if r["image_id"] == rows[2]["image_id"]]
    assert bad and all(r["error"] and r["error"]["type"] == "bad_input" for r in bad)
    assert all(rows[2]["image_id"] in r["error"]["message"] for r in bad)
    after = [r for r in records if r["image_id"] in (rows[3]["image_id"], rows[4]["image_id"])]
    assert after and not any(r["error"] for r in after)  # the rows after it were all asked
    assert "Skipped for bad input" in proc.stdout


def test_a_corrupt_dataset_file_is_one_line_and_exits_non_zero(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE_PATH, data / "part-0.parquet")
    (data / "part-1.parquet").write_bytes(SAMPLE_PATH.read_bytes()[:3000])  # torn copy
    proc = ubench("run", "--model", "random", "--dataset", str(data), "--output",
                  str(tmp_path / "r"), "--no-progress", check=False)
    assert proc.returncode != 0 and no_traceback(proc)
    assert f"could not load dataset from {data}" in proc.stderr


def test_a_corrupt_line_in_the_middle_of_samples_is_skipped_and_named(tmp_path):
    out = tmp_path / "run"
    ubench("run", "--model", "random", "--output", str(out), "--no-progress")
    lines = (out / "samples.jsonl").read_bytes().splitlines(keepends=True)
    lost = json.loads(lines[60])["item_id"]
    lines[60] = b'{"item_id": "half a rec\n'
    (out / "samples.jsonl").write_bytes(b"".join(lines))
    proc = ubench("score", str(out))
    assert "samples.jsonl:61: unreadable record skipped" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_records"] == len(lines) - 1
    # A resume asks only the lost item again, and keeps everything else.
    proc = ubench("run", "--model", "random", "--output", str(out), "--no-progress")
    records = read_jsonl_tolerant(out / "samples.jsonl")
    assert [r["item_id"] for r in records[len(lines) - 1:]] == [lost]
    assert json.loads((out / "summary.json").read_text())["n_records"] == len(lines)


def read_jsonl_tolerant(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def test_retry_after_as_an_http_date():
    now = 1_700_000_000.0
    assert retry_after_seconds(formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7)
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_an_http_date_retry_after_is_honoured(tmp_path):
    with TestServer("random", fault_rate=1.0, faults=("429",)) as server:
        server.behaviour.retry_after = formatdate(time.time() + 2, usegmt=True)
        start = time.monotonic()
        proc = ubench("run", "--model", "vllm/x", "--base-url", server.base_url, "--output",
                      str(tmp_path / "r"), "--limit", "1", "--max-attempts", "2", "--no-progress",
                      check=False)
        assert proc.returncode == 3  # no item could be answered
        elapsed = time.monotonic() - start
        assert server.stats.requests == 2
    assert elapsed >= 1.0, "the second attempt came before the Retry-After date"
    (record,) = read_jsonl(tmp_path / "r" / "samples.jsonl")
    assert record["error"]["type"] == "rate_limit" and record["error"]["attempts"] == 2


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("misuse")
    for name in ("a", "b"):
        ubench("run", "--model", "random", "--output", str(root / name), "--no-progress")
    return root


@pytest.mark.parametrize("args, message", [
    (["merge", "{a}", "{b}", "--output", "{root}/m1"], "not a shard run"),
    (["merge", "{a}", "{root}/nowhere", "--output", "{root}/m2"], "{root}/nowhere"),
    (["merge", "{a}", "{b}", "--output", "{a}"], "is not empty"),
    (["compare", "{a}"], "at least two"),
    (["compare", "{a}", "{root}/nowhere"], "{root}/nowhere"),
])
def test_merge_and_compare_misuse_is_one_clear_line(two_runs, args, message):
    fill = {"a": str(two_runs / "a"), "b": str(two_runs / "b"), "root": str(two_runs)}
    proc = ubench(*[a.format(**fill) for a in args], check=False)
    assert proc.returncode != 0 and no_traceback(proc)
    assert message.format(**fill) in proc.stderr + proc.stdout


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "manifest.json").write_text("{not json"), "not a readable run folder"),
    (lambda d: (d / "manifest.json").write_text('{"dataset": {}}'), "revision"),
    (lambda d: (d / "samples.jsonl").write_text('{"item_id": "x:domain"}\n'), "missing field"),
])
def test_compare_on_a_damaged_run_folder_is_one_clear_line(two_runs, tmp_path, damage, message):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(two_runs / "b", broken)
    damage(broken)
    proc = ubench("compare", str(two_runs / "a"), str(broken), check=False)
    assert proc.returncode != 0 and no_traceback(proc)
    assert str(broken) in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [["--style", "bogus"], ["--model-style", "a=bogus"],
                                  ["--faults", "500,nope"]])
def test_the_test_server_command_line_refuses_unknown_styles_and_faults(args):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "harness.servers.testserver", *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert args[-1].split("=")[-1].split(",")[-1] in proc.stderr  # names what it refused


@pytest.mark.parametrize("args, message", [
    (["--datasets", "kather_et_al_2061"], "kather_et_al_2016"),
    (["--dataset", "/nonexistent/ubench"], "/nonexistent/ubench"),
    (["--answer-mode", "logprobs"], "lacks"),
])
def test_a_dry_run_refuses_what_the_run_would_refuse(tmp_path, args, message):
    proc = ubench("run", "--model", "random", "--dry-run", "--output", str(tmp_path / "d"), *args,
                  check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "d" / "estimate.json").exists()
