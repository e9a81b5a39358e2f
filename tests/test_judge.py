"""The LLM judge, driven through the CLI against the loopback server: asked only about invalid
responses, its reply parsed by the same rules, decisions cached, both accuracies reported."""
from __future__ import annotations

import hashlib
import json
import socket

import pytest

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
            assert r["judge"]["reply"] == r["judge_raw"] == "A" and r["correct"] == (r["gold"] == "A")
        for r in by_response[RAMBLE]:  # the judge's "NONE" is no answer either
            assert r["extracted"] is None and r["rule"] == "invalid:no_answer"
            assert r["judge"]["rule"].startswith("invalid:") and "rule_before_judge" not in r
        asked = by_response[HEDGE] + by_response[RAMBLE]
        # the raw response is kept untouched: never replaced by the judge's reply
        assert all(r["response"] in (HEDGE, RAMBLE) and r["response"] != r["judge"]["reply"]
                   for r in asked)
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


def test_extract_asks_the_judge_and_shows_it_only_the_conclusion(tmp_path):
    """`ubench extract --judge`: only invalid lines are asked; the prompt holds the question, the
    options and the response's last 2,000 characters; the raw reply is kept; a re-run is cached."""
    options = {"A": "eosinophil", "B": "neutrophil", "C": "basophil"}
    long_hedge = "OPENING-WORDS " + "The stain is uneven here. " * 400 + HEDGE
    lines = [("B", "B"), (HEDGE, "A"), (long_hedge, "A"), (RAMBLE, "none"), ("", "none")]
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": i, "question": "Which granulocyte is shown?",
                                          "options": options, "response": r, "gold": g}) + "\n"
                              for i, (r, g) in enumerate(lines)), encoding="utf-8")
    prompts = []

    def judge_only(body: dict) -> str:
        prompts.append(prompt_parts(body)[0])
        return judge_answer(prompts[-1])

    with TestServer(judge_only) as server:
        args = ("extract", "--input", str(source), "--output", str(target), "--judge",
                "vllm/judge", "--judge-base-url", server.base_url)
        proc = ubench(*args)
        out = read_jsonl(target)
        assert server.stats.models["judge"] == 3  # the hedges and the ramble; not "B", not ""
        again = ubench(*args)
        assert server.stats.models["judge"] == 3  # answered from the cache
        rerun = read_jsonl(target)
        assert [o["extracted"] for o in rerun] == [o["extracted"] for o in out]
        assert all(o["judge"]["cached"] for o in rerun if "judge" in o)
    assert [o["rule"] for o in out[:3]] == ["lone_letter", "judge", "judge"]
    assert [o["extracted"] for o in out] == ["B", "A", "A", None, None]
    assert [o.get("judge_raw") for o in out] == [None, "A", "A", "NONE", None]
    assert out[1]["rule_before_judge"].startswith("invalid:") and out[3]["rule"].startswith("invalid:")
    assert all(o["correct"] for o in out)  # "none" agrees with an invalid reading
    for prompt in prompts:
        assert "Which granulocyte is shown?" in prompt and "C) basophil" in prompt
    long_prompt = next(p for p in prompts if "uneven" in p)
    shown = long_prompt.split('"""')[1].strip()
    assert len(shown) == 2_000 and shown.endswith(HEDGE) and "OPENING-WORDS" not in long_prompt
    assert "(its last 2,000 characters)" in long_prompt
    assert "judge: asked about 3 invalid lines, decided 2, 0 failed" in proc.stdout
    assert "agreement with 'gold' over 5 lines: 100.00%" in proc.stdout
    assert "without the judge: 60.00%" in proc.stdout
    assert "judge: asked about 3 invalid lines, decided 2" in again.stdout


def _judge_prices(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(json.dumps({
        "version": "test", "source": "tests",
        "models": {"openai/vlm": {"input": 2.0, "cached_input": 0.5, "output": 8.0},
                   "openai/judge": {"input": 0.1, "cached_input": 0.05, "output": 0.4}},
        "image_rules": {}}))
    return path


def _cost(usage, input_, cached, output):
    return ((usage["prompt_tokens"] - usage["cached_tokens"]) * input_
            + usage["cached_tokens"] * cached + usage["completion_tokens"] * output) / 1e6


def test_the_judge_has_its_own_usage_and_cost_never_mixed_into_the_models(tmp_path):
    # Model and judge on two servers, each reporting varied usage: the run's usage is exactly
    # what the model's server reported, `judge_usage` exactly what the judge's did, each priced
    # at its own model's price; the records keep the judge's usage as sent.
    out = tmp_path / "run"
    prices = _judge_prices(tmp_path)
    with TestServer(responder, usage_details=True) as model, \
            TestServer(responder, usage_details=True) as judge:
        ubench("run", "--model", "openai/vlm", "--base-url", model.base_url, "--judge",
               "openai/judge", "--judge-base-url", judge.base_url, "--limit", "40",
               "--output", str(out), "--price-file", str(prices), "--no-progress")
        reported = {"model": dict(model.stats.usage), "judge": dict(judge.stats.usage)}
    assert set(model.stats.models) == {"vlm"} and set(judge.stats.models) == {"judge"}
    summary = json.loads((out / "summary.json").read_text())
    judged = summary["judge_usage"]
    assert judged["model"] == "openai/judge" and reported["judge"]["requests"] > 0
    for name in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens",
                 "reasoning_tokens"):
        assert summary["usage"][name] == reported["model"][name], name
        assert judged["usage"][name] == reported["judge"][name], name
    assert summary["cost_usd"] == pytest.approx(_cost(reported["model"], 2.0, 0.5, 8.0), abs=1e-6)
    assert judged["cost_usd"] == pytest.approx(_cost(reported["judge"], 0.1, 0.05, 0.4), abs=1e-6)
    assert judged["cost_complete"] and judged["pricing"]["key"] == "openai/judge"
    records = [r for r in read_jsonl(out / "samples.jsonl") if "judge" in r]
    assert sum(r["judge"]["usage"]["prompt_tokens"] for r in records) == \
        reported["judge"]["prompt_tokens"]
    assert all("prompt_tokens_details" in r["judge"]["usage"] for r in records)  # as sent
    md = (out / "summary.md").read_text()
    assert f"Judge usage: openai/judge: {reported['judge']['requests']} requests" in md
    assert f"cost ${judged['cost_usd']:,.4f}" in md
    assert "LLM judge usage and cost" in (out / "report.html").read_text()
    ubench("score", str(out))  # recomputed from the records and the manifest's prices alike
    assert json.loads((out / "summary.json").read_text())["judge_usage"] == judged


def test_extract_sums_the_judges_usage(tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    options = {"A": "eosinophil", "B": "neutrophil"}
    source.write_text("".join(json.dumps({"options": options, "response": r}) + "\n"
                              for r in ("B", HEDGE, RAMBLE, HEDGE + " Maybe.")))
    with TestServer(lambda body: judge_answer(prompt_parts(body)[0]),
                    usage_details=True) as server:
        proc = ubench("extract", "--input", str(source), "--output", str(target), "--judge",
                      "openai/gpt-4o-mini", "--judge-base-url", server.base_url)
        reported = dict(server.stats.usage)
    assert reported["requests"] == 3
    asked = [o["judge"] for o in read_jsonl(target) if "judge" in o]
    assert sum(j["usage"]["prompt_tokens"] for j in asked) == reported["prompt_tokens"]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("judge usage: "))
    assert line.startswith(f"judge usage: openai/gpt-4o-mini: 3 requests; "
                           f"{reported['prompt_tokens']:,} prompt tokens "
                           f"({reported['cached_tokens']:,} cached); "
                           f"{reported['completion_tokens']:,} completion tokens "
                           f"({reported['reasoning_tokens']:,} reasoning); cost $"), line
