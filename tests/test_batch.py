"""`ubench run --batch` against the test server's Files and Batches endpoints, as a user runs it."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from harness.servers.testserver import TestServer
from tests.conftest import ROOT, read_jsonl, ubench


def _prices(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(json.dumps({"models": {"openai/test-model": {
        "input": 2.0, "cached_input": 1.0, "output": 8.0, "batch_discount": 0.5}}}))
    return path


def test_batch_run_joins_results_by_custom_id_and_resubmits_failures(tmp_path):
    out, online = tmp_path / "batch", tmp_path / "online"
    prices = _prices(tmp_path)
    with TestServer("random", usage_details=True) as server:
        server.batches.error_every = 7   # per-line failures, each request once
        server.batches.expire_first = 1  # the first batch expires with half its lines answered
        proc = ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
                      "--output", str(out), "--batch", "--batch-poll", "0",
                      "--batch-max-requests", "50", "--price-file", str(prices))
        counts = dict(server.batches.counts)
        reported = dict(server.stats.usage)
        ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
               "--output", str(online), "--no-cache", "--no-progress")
    records = read_jsonl(out / "samples.jsonl")
    online_records = {r["item_id"]: r for r in read_jsonl(online / "samples.jsonl")}
    assert sorted(r["item_id"] for r in records) == sorted(online_records)  # one per item
    assert all(r["error"] is None and r["batch_id"] for r in records)
    for r in records:  # the same record as online, answer included, whatever the output order
        o = online_records[r["item_id"]]
        assert r["response"] == o["response"] and r["correct"] == o["correct"]
        assert set(r) - set(o) == {"batch_id"}
    state = json.loads((out / "batch" / "state.json").read_text())
    first = [f for f in state["files"] if f["round"] == 1]
    assert [f["requests"] for f in first] == [50, 50, 36]
    assert first[0]["status"] == "expired" and any(f["round"] == 2 for f in state["files"])
    assert counts["creates"] == len(state["files"]) == counts["uploads"]
    assert sum(1 for r in records if r["attempts"] == 2) == sum(
        f["requests"] for f in state["files"] if f["round"] == 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["usage"]["requests"] == len(records)
    assert "batch" in proc.stderr + proc.stdout
    first_line = (out / "batch" / first[0]["name"]).read_text().splitlines()[0]
    request = json.loads(first_line)
    assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
    assert request["body"]["model"] == "test-model" and request["custom_id"]
    # usage: what the server reported for the batch lines, summed exactly; half-price cost
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
        assert summary["usage"][name] == reported[name]
    full = ((reported["prompt_tokens"] - reported["cached_tokens"]) * 2.0
            + reported["cached_tokens"] * 1.0 + reported["completion_tokens"] * 8.0) / 1e6
    assert summary["cost_usd"] == pytest.approx(full / 2, abs=1e-6)


def test_what_batches_cannot_answer_gets_an_error_record_then_is_asked_online(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "openai/test-model", "--output", str(out), "--batch",
            "--batch-poll", "0", "--no-progress"]
    with TestServer("random") as server:
        server.batches.error_every, server.batches.error_repeat = 10, True
        proc = ubench(*args, "--base-url", server.base_url, check=False)
        assert proc.returncode == 1, proc.stderr  # some items are errors, retried on re-run
        failed = [r for r in read_jsonl(out / "samples.jsonl") if r["error"]]
        assert len(failed) == 13 and all(r["error"]["type"] == "batch" for r in failed)
        assert server.stats.requests == 0  # nothing online yet
        creates = server.batches.counts["creates"]
        ubench(*args, "--base-url", server.base_url, "--batch-online-fallback")
        assert server.batches.counts["creates"] == creates  # no batch again
        assert server.stats.requests == 13  # only the failed ones, online
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_records"] == 136 and summary["n_errors"] == 0
    images = {r["image_id"] for r in read_jsonl(out / "samples.jsonl")}
    assert set(_thumbnails(out)) == images  # the online fallback made none twice


def test_batch_refuses_what_it_cannot_do(tmp_path):
    for extra, message in ((["--max-cost", "5"], "--max-cost limits online requests"),
                           (["--prompt", "official", "--prompt", "cot"], "one template")):
        proc = ubench("run", "--model", "openai/test-model", "--base-url", "http://127.0.0.1:9/v1",
                      "--output", str(tmp_path / "r"), "--batch", *extra, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr  # usage: nothing sent


def _wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_killed_batch_run_rerun_submits_nothing_new(tmp_path):
    out = tmp_path / "run"
    state_path = out / "batch" / "state.json"

    def submitted():
        if not state_path.exists():
            return False
        files = json.loads(state_path.read_text())["files"]
        return all(f["batch_id"] for f in files)

    with TestServer("random") as server:
        server.batches.hold = True  # submitted, never finishing, until the kill
        args = ["run", "--model", "openai/test-model", "--base-url", server.base_url,
                "--output", str(out), "--batch", "--batch-poll", "0.05",
                "--batch-max-requests", "60", "--no-progress"]
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "OPENAI_API_KEY": "sk-test"})
        try:
            _wait_for(submitted)
            _wait_for(lambda: server.batches.counts["retrieves"] >= 3)  # polling, in flight
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert server.batches.counts["creates"] == 3
        made = _thumbnails(out)  # made while the requests were written, before any was sent
        # as if killed between creating the last batch and saving its id
        state = json.loads(state_path.read_text())
        state["files"][-1]["batch_id"] = None
        state_path.write_text(json.dumps(state))

        server.batches.hold = False
        ubench(*args)
        assert server.batches.counts["creates"] == 3 and server.batches.counts["uploads"] == 3
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == len({r["item_id"] for r in records}) == 136
    assert all(r["error"] is None for r in records)
    assert json.loads(state_path.read_text())["files"][-1]["batch_id"]
    assert _thumbnails(out) == made and set(made) == {r["image_id"] for r in records}


def _unsent(args: list[str]) -> list[str]:
    """`args` without --base-url and its value: an export sends nothing (and needs no server,
    nor a key: OPENAI_API_KEY is not set here)."""
    at = args.index("--base-url")
    return args[:at] + args[at + 2:]


def _export(tmp_path, model, *extra):
    out = tmp_path / "run"
    proc = ubench("run", "--model", model, "--dataset", "sample", "--limit", "6",
                  "--max-tokens", "4", "--output", str(out), "--export-batch", *extra)
    assert "vllm.entrypoints.openai.run_batch -i" in proc.stderr
    return out, out / "batch" / "requests-001.jsonl"


def test_exported_requests_import_their_results_in_any_order(tmp_path):
    from harness.servers.testserver import completion, make_responder

    # nothing is sent while exporting (and --base-url is refused with --export-batch)
    out, requests = _export(tmp_path, "vllm/m")
    assert not (out / "samples.jsonl").read_text()
    respond = make_responder("random")
    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    results = tmp_path / "results.jsonl"
    rows = [{"id": str(i), "custom_id": line["custom_id"], "error": None,
             "response": {"status_code": 200, "body": completion("m", respond(line["body"]), {
                 "prompt_tokens": 7, "completion_tokens": 1})}} for i, line in enumerate(lines)]
    rows[0]["response"] = {"status_code": 400, "body": {"error": {"message": "too long"}}}
    results.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1])
                       + 'not json\n{"custom_id": {"a": 1}}\n[1]\n')
    proc = ubench("import-batch", str(out), str(results))
    assert "Imported 5 answers and 1 failed lines" in proc.stdout
    records = {r["item_id"]: r for r in read_jsonl(out / "samples.jsonl")}
    assert len(records) == 6 and records[lines[0]["custom_id"]]["error"]["type"] == "batch"
    assert json.loads((out / "summary.json").read_text())["usage"]["prompt_tokens"] == 35
    ubench("import-batch", str(out), str(results))  # importing again adds no second answer
    (out / "batch" / "state.json").write_text("{torn")
    proc = ubench("import-batch", str(out), str(results), check=False)
    assert proc.returncode == 2 and "state.json: unreadable" in proc.stderr
    answers = [r for r in read_jsonl(out / "samples.jsonl") if not r["error"]]
    assert len(answers) == len({r["item_id"] for r in answers}) == 5


@pytest.mark.parametrize("limit", [[], ["--max-response-bytes", "20000000"]])
def test_imported_results_are_read_within_the_line_limit(tmp_path, limit):
    """The line limit is the export's --max-response-bytes (8 MB unless given) plus 64 KiB."""
    from harness.servers.testserver import completion, make_responder

    out, requests = _export(tmp_path, "vllm/m", *limit)
    respond = make_responder("random")
    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    rows = [json.dumps({"id": str(i), "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": 200, "body": completion(
                            "m", respond(line["body"]), {"prompt_tokens": 7})}})
            for i, line in enumerate(lines)]
    huge = json.loads(rows[0])  # 10 MB: over 8 MB + 64 KiB, across several reads
    huge["response"]["body"]["padding"] = "x" * 10_000_000
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(huge) + "\n" + "\n".join(rows[1:]))  # no final newline
    proc = ubench("import-batch", str(out), str(results))
    if limit:  # the run allowed 20 MB replies: the 10 MB one is an answer
        assert "Imported 6 answers and 0 failed lines" in proc.stdout
        return
    assert "Imported 5 answers and 1 failed lines" in proc.stdout
    failed = [r for r in read_jsonl(out / "samples.jsonl") if r["error"]]
    assert [r["item_id"] for r in failed] == [lines[0]["custom_id"]]
    assert "line 1 of" in failed[0]["error"]["message"]
    assert "over the limit of a line" in failed[0]["error"]["message"]


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_run_batch_round_trip(tmp_path):
    from tests.test_vllm_managed import VLLM_ARGS, VLLM_ENV, VLLM_PYTHON

    if not os.path.exists(VLLM_PYTHON):
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}")
    pytest.importorskip("transformers", reason="the tiny model is built with the 'local' extra")
    from tests.tiny_vlm import build_tiny_idefics3

    model = build_tiny_idefics3(tmp_path / "tiny")
    out, requests = _export(tmp_path, f"vllm/{model}")
    results = tmp_path / "results.jsonl"
    subprocess.run([VLLM_PYTHON, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(requests),
                    "-o", str(results), "--model", str(model), *shlex.split(VLLM_ARGS)],
                   env={**os.environ, **VLLM_ENV}, check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = ubench("import-batch", str(out), str(results))
    assert "Imported 6 answers and 0 failed lines" in proc.stdout
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 6 and all(r["error"] is None for r in records)
    assert all(1 <= r["usage"]["completion_tokens"] <= 4 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["usage"]["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in records)


def test_a_key_echoed_in_batch_answers_and_failures_is_redacted(tmp_path, private_cache):
    from tests.test_hardening import secret_free
    from tests.test_robustness import FAKE_KEY

    out = tmp_path / "run"
    with TestServer("random") as server:
        server.batches.key_echo = True  # every answer and failure quotes the key
        server.batches.error_every, server.batches.error_repeat = 5, True
        proc = ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
                      "--output", str(out), "--batch", "--batch-poll", "0", "--limit", "20",
                      "--no-progress", env={"OPENAI_API_KEY": FAKE_KEY}, check=False)
    assert proc.returncode == 1, proc.stderr  # the failed lines are errors
    records = read_jsonl(out / "samples.jsonl")
    answered = [r for r in records if not r["error"]]
    failed = [r for r in records if r["error"]]
    assert len(answered) == 16 and len(failed) == 4
    assert all(r["response"].endswith("(key [REDACTED])") and r["redacted"] for r in answered)
    assert all("(key [REDACTED])" in r["error"]["message"] for r in failed)
    assert json.loads((out / "summary.json").read_text())["n_redacted"] == 16
    assert list((out / "batch").glob("results-*.jsonl"))  # the raw copies, redacted too
    secret_free(out, private_cache, secrets=(FAKE_KEY, FAKE_KEY[:8]))
    assert FAKE_KEY[:8] not in proc.stdout + proc.stderr


def _thumbnails(out):
    """thumbnails.jsonl by image id; every image once."""
    rows = read_jsonl(out / "thumbnails.jsonl")
    assert len(rows) == len({r["image_id"] for r in rows})
    return {r["image_id"]: r["thumbnail"] for r in rows}


def test_a_batch_run_makes_the_thumbnails_an_online_run_makes(tmp_path, monkeypatch):
    from functools import partial

    from harness.report import thumbnails
    from harness.run import runner

    limit = 40  # records in the browser: a strict subset of the sample's images is chosen
    monkeypatch.setattr(runner, "ThumbnailRecorder",
                        partial(thumbnails.ThumbnailRecorder, limit=limit))
    batch, exported, online = tmp_path / "batch", tmp_path / "exported", tmp_path / "online"
    with TestServer("random") as server:
        base = ["--model", "openai/test-model", "--base-url", server.base_url, "--no-progress"]
        ubench("run", *base, "--output", str(batch), "--batch", "--batch-poll", "0")
        ubench("run", *_unsent(base), "--output", str(exported), "--export-batch")
        ubench("run", *base, "--output", str(online), "--no-cache")
    counts: dict[str, int] = {}
    for r in read_jsonl(online / "samples.jsonl"):
        counts[r["image_id"]] = counts.get(r["image_id"], 0) + 1
    chosen = thumbnails.browser_images(counts, limit)
    assert 0 < len(chosen) < len(counts)
    made = _thumbnails(online)
    assert set(made) == chosen
    assert _thumbnails(batch) == made and _thumbnails(exported) == made  # the same JPEGs
    page = (batch / "report.html").read_text()
    assert all(made[i] in page for i in chosen)  # the report shows them


def test_batch_requests_are_the_bodies_an_online_run_posts(tmp_path):
    # few-shot: the examples' images come from the feed's one encoding, as online
    out, online = tmp_path / "batch", tmp_path / "online"
    with TestServer("random") as server:
        base = ["--model", "openai/test-model", "--base-url", server.base_url, "--no-progress",
                "--prompt", "few-shot-3", "--limit", "12", "--max-image-side", "64"]
        ubench("run", *_unsent(base), "--output", str(out), "--export-batch")
        server.stats.keep_bodies = True
        ubench("run", *base, "--output", str(online), "--no-cache")
        posted = sorted(json.dumps(b, sort_keys=True) for b in server.stats.bodies)
    lines = [json.loads(line) for line in
             (out / "batch" / "requests-001.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    assert sorted(json.dumps(line["body"], sort_keys=True) for line in lines) == posted
    assert all(len([p for m in line["body"]["messages"] for p in m["content"]
                    if isinstance(p, dict) and p.get("type") == "image_url"]) == 4
               for line in lines)  # three examples and the item's own image


def test_a_result_line_over_the_limit_fails_its_request_only(tmp_path):
    out = tmp_path / "run"
    with TestServer("random") as server:
        server.batches.pad_first = 200_000  # each batch's first answer: far over the limit
        proc = ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
                      "--output", str(out), "--batch", "--batch-poll", "0", "--limit", "12",
                      "--max-response-bytes", "50000", "--no-progress", check=False)
    assert proc.returncode == 1, proc.stderr  # one item is an error, the run finished
    records = read_jsonl(out / "samples.jsonl")
    failed = [r for r in records if r["error"]]
    assert len(records) == 12 and len(failed) == 1  # failed, resubmitted, failed again
    assert "over the limit of a line (--max-response-bytes" in failed[0]["error"]["message"]
    assert failed[0]["item_id"] in failed[0]["error"]["message"]
    copies = list((out / "batch").glob("results-*-output.jsonl"))
    assert copies and all(copy.stat().st_size < 50_000 for copy in copies)  # left out of the copy
    assert "over the limit of a line" in (out / "run.log").read_text()


def test_a_download_broken_off_is_retried_and_joins_each_answer_once(tmp_path):
    out = tmp_path / "run"
    with TestServer("random") as server:
        server.batches.cut_downloads = 1  # the output file stops halfway the first time
        ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
               "--output", str(out), "--batch", "--batch-poll", "0", "--limit", "12",
               "--no-progress")
        assert server.batches.counts["downloads"] == 2 and server.batches.cut_downloads == 0
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == len({r["item_id"] for r in records}) == 12
    assert all(not r["error"] for r in records)
    copy = next((out / "batch").glob("results-*-output.jsonl"))
    assert len(copy.read_text().splitlines()) == 12  # the copy was started over, not appended


def test_a_results_file_longer_than_its_batch_stops_with_one_line(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "openai/test-model", "--output", str(out), "--batch",
            "--batch-poll", "0", "--limit", "12", "--no-progress"]
    with TestServer("random") as server:
        server.batches.repeat_output = 3  # every line three times: 36 lines for 12 requests
        proc = ubench(*args, "--base-url", server.base_url, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        error = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(error) == 1 and "output file" in error[0], proc.stderr
        assert "more than 24 lines for its 12 request(s)" in error[0]
        answered = read_jsonl(out / "samples.jsonl")
        assert 0 < len(answered) < 12 and all(not r["error"] for r in answered)  # kept
        server.batches.repeat_output = 1  # a re-run reads the same file again, and stops again
        proc = ubench(*args, "--base-url", server.base_url, check=False)
        assert proc.returncode == 1 and "more than 24 lines" in proc.stderr
        assert server.batches.counts["creates"] == 1
    assert len(read_jsonl(out / "samples.jsonl")) == len(answered)  # nothing twice
    with TestServer("random") as server:  # one request, one line of 1 MB: over two lines' bytes
        server.batches.pad_first = 1_000_000
        proc = ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
                      "--output", str(tmp_path / "one"), "--batch", "--batch-poll", "0",
                      "--limit", "1", "--max-response-bytes", "50000", "--no-progress",
                      check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "over 231074 bytes, more than its 1 request(s) can take" in proc.stderr


@pytest.mark.parametrize("model", ["azure/deployment", "gemini/gemini-2.0-flash",
                                   "anthropic/claude-x", "openrouter/a/b", "together/m",
                                   "vllm/m"])
def test_batch_is_refused_for_a_provider_without_a_batch_api(tmp_path, model):
    out = tmp_path / "run"
    provider = model.split("/")[0]
    for extra in ([], ["--dry-run"]):
        proc = ubench("run", "--model", model, "--base-url", "http://127.0.0.1:9/v1",
                      "--output", str(out), "--batch", *extra, check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"--batch: {provider}/ has no Batch API" in lines[0]
        assert not out.exists()  # nothing written, nothing sent
    assert ("--export-batch" in lines[0]) == (provider == "vllm")
