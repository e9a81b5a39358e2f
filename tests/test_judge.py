"""The LLM judge, driven through the CLI against the loopback server: asked only about invalid
responses, its reply parsed by the same rules, decisions cached, both accuracies reported."""
from __future__ import annotations

import hashlib
import json
import socket

from harness.servers.testserver import TestServer, prompt_parts
from tests.conftest import read_jsonl, ubench

HEDGE = "It has granules, hard to say which."
RAMBLE = "The image is interesting."


def model_answer(text: str) -> str:
    """The model under test: a third answer B, a third hedge, a third ramble or say nothing."""
    bucket = hashlib.sha256(text.encode()).digest()[0] % 6
    return ["B", "B", HEDGE, HEDGE, RAMBLE, ""][bucket]


def judge_answer(text: str) -> str:
    """The judge reads the hedge as option A, and finds no answer in the ramble."""
    response = text.split('"""')[1]
    return "A" if "granules" in response else "NONE"


def responder(body: dict) -> str:
    text = prompt_parts(body)[0]
    return judge_answer(text) if body["model"] == "judge" else model_answer(text)


def run_args(out, url, judge_url, *extra):
    return ("run", "--model", "vllm/vlm", "--base-url", url, "--judge", "vllm/judge",
            "--judge-base-url", judge_url, "--dataset", "sample", "--limit", "40",
            "--concurrency", "1", "--output", str(out), "--no-progress", *extra)


def test_judge_decides_only_invalid_responses_and_is_cached(tmp_path):
    out = tmp_path / "run"
    with TestServer(responder) as server:
        ubench(*run_args(out, server.base_url, server.base_url))
        first_calls = server.stats.models["judge"]
        records = read_jsonl(out / "samples.jsonl")

        by_response = {r["response"]: [] for r in records}
        for r in records:
            by_response[r["response"]].append(r)
        assert set(by_response) == {"B", HEDGE, RAMBLE, ""}
        for r in by_response["B"]:  # valid: never shown to the judge
            assert r["rule"] == "lone_letter" and "judge" not in r
        for r in by_response[""]:  # nothing to judge
            assert r["rule"] == "invalid:empty" and "judge" not in r
        for r in by_response[HEDGE]:
            assert (r["extracted"], r["rule"]) == ("A", "judge")
            assert r["rule_before_judge"].startswith("invalid:")
            assert r["judge"]["reply"] == "A" and r["correct"] == (r["gold"] == "A")
        for r in by_response[RAMBLE]:  # the judge's "NONE" is no answer either
            assert r["extracted"] is None and r["rule"] == "invalid:no_answer"
            assert r["judge"]["rule"].startswith("invalid:") and "rule_before_judge" not in r
        asked = by_response[HEDGE] + by_response[RAMBLE]
        assert r["response"] == RAMBLE  # the raw response is kept untouched
        assert first_calls == sum(not r["judge"]["cached"] for r in asked) > 0

        summary = json.loads((out / "summary.json").read_text())
        judge = summary["judge"]
        n = len(records)
        right_b = sum(r["correct"] for r in by_response["B"])
        right_judge = sum(r["correct"] for r in by_response[HEDGE])
        assert judge["n_asked"] == len(asked) and judge["n_decided"] == len(by_response[HEDGE])
        assert judge["without"]["accuracy"] == right_b / n
        assert judge["with"]["accuracy"] == (right_b + right_judge) / n
        assert judge["without"]["invalid_rate"] == (n - len(by_response["B"])) / n
        still_invalid = len(by_response[RAMBLE]) + len(by_response[""])
        assert judge["with"]["invalid_rate"] == still_invalid / n
        assert summary["rules"]["judge"]["n"] == len(by_response[HEDGE])
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["judge"]["model"]["spec"] == "vllm/judge"
        assert "LLM judge vllm/judge" in (out / "summary.md").read_text()

        # Starting over asks the model again but the judge never: its decisions are cached.
        ubench(*run_args(out, server.base_url, server.base_url, "--force"))
        assert server.stats.models["judge"] == first_calls
        again = read_jsonl(out / "samples.jsonl")
        assert all(r["judge"]["cached"] for r in again if "judge" in r)
        assert [r["extracted"] for r in again] == [r["extracted"] for r in records]


def test_an_unreachable_judge_leaves_records_invalid_and_the_run_completes(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    out = tmp_path / "run"
    with TestServer(responder) as server:
        ubench(*run_args(out, server.base_url, dead, "--max-attempts", "1", "--timeout", "5"))
    records = read_jsonl(out / "samples.jsonl")
    asked = [r for r in records if "judge" in r]
    assert asked and all(r["judge"]["error"]["type"] == "connection" for r in asked)
    assert all(r["rule"].startswith("invalid:") for r in asked)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"]["n_errors"] == len(asked) and summary["judge"]["n_decided"] == 0
    assert summary["n_errors"] == 0  # the model's answers were all received and scored
