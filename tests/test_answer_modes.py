"""`--answer-mode choice|logprobs` through the CLI against the loopback server: the request bodies,
the stored letter probabilities and the calibration metrics, checked against hand computations
from the server's known token distribution."""
from __future__ import annotations

import base64
import hashlib
import json
import math

import pytest

from harness.adapters.answer_modes import read_letter_probs, token_letter, unsupported
from harness.servers.testserver import TestServer, prompt_parts
from tests.conftest import read_jsonl, ubench
from tests.responders import letter_distribution, sample_oracle


def body_key(body: dict) -> tuple[str, str]:
    """(prompt text, image SHA-256) of a request, as a record stores them."""
    text, url = prompt_parts(body)
    return text, hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()


def record_key(record: dict) -> tuple[str, str]:
    text = "\n".join(p["text"] for m in record["prompt"] for p in m["content"]
                     if p["type"] == "text")
    return text, record["image"]["sha256"]


def expected_letter_probs(positions, letters: str, top: int):
    """By hand: the answer token is the first position whose chosen (most probable) token is a
    letter, else the first; its top-`top` tokens are summed by letter and renormalised."""
    positions = positions if isinstance(positions, list) else [positions]
    chosen = [max(d, key=d.get) for d in positions]
    index = next((i for i, t in enumerate(chosen) if t.strip(" (") in letters), 0)
    top_k = sorted(positions[index].items(), key=lambda kv: -kv[1])[:top]
    mass = {k: 0.0 for k in letters}
    for token, p in top_k:
        if token.strip(" (") in letters and len(token.strip(" (")) == 1:
            mass[token.strip(" (")] += p
    total = sum(mass.values())
    return ({k: v / total for k, v in mass.items()} if total else None), total


def hand_metrics(items: list[tuple[dict, str, str]], n_bins: int = 15) -> dict:
    """Brier, NLL, ECE, mean gold prob, letter mass, selective accuracy and AURC, in plain Python
    over (letter_probs, gold, item_id) triples, as the README defines them."""
    rows = []
    for probs, gold, mass, item_id in items:
        letters = list(probs)
        best = max(probs.values())
        predicted = next(k for k in letters if probs[k] == best)
        rows.append({"conf": best, "correct": predicted == gold, "gold_p": probs[gold],
                     "brier": sum((probs[k] - (k == gold)) ** 2 for k in letters),
                     "mass": mass, "id": item_id})
    n = len(rows)
    ece = 0.0
    for b in range(n_bins):
        in_bin = [r for r in rows if min(int(r["conf"] * n_bins), n_bins - 1) == b]
        if in_bin:
            acc = sum(r["correct"] for r in in_bin) / len(in_bin)
            conf = sum(r["conf"] for r in in_bin) / len(in_bin)
            ece += len(in_bin) / n * abs(acc - conf)
    ranked = sorted(rows, key=lambda r: (-r["conf"], r["id"]))
    selective = {}
    for c in (100, 90, 80, 50):
        m = math.ceil(c / 100 * n - 1e-9)
        selective[c] = sum(r["correct"] for r in ranked[:m]) / m
    aurc = sum(sum(not r["correct"] for r in ranked[:k]) / k for k in range(1, n + 1)) / n
    return {"accuracy": sum(r["correct"] for r in rows) / n,
            "mean_gold_prob": sum(r["gold_p"] for r in rows) / n,
            "brier": sum(r["brier"] for r in rows) / n,
            "nll": sum(-math.log(max(r["gold_p"], 1e-12)) for r in rows) / n,
            "ece": ece, "letter_mass": sum(r["mass"] for r in rows) / n, "aurc": aurc,
            **{f"selective_accuracy_{c}": v for c, v in selective.items()}}


@pytest.mark.parametrize("top", [20, 3])
def test_logprobs_mode_stores_the_known_distribution_and_its_metrics(tmp_path, top):
    distribution = letter_distribution(preamble_every=5)
    out = tmp_path / "run"
    with TestServer("first") as server:
        server.behaviour.distribution = distribution
        server.stats.keep_bodies = True
        ubench("run", "--model", "openai/gpt-4o", "--base-url", server.base_url, "--dataset",
               "sample", "--answer-mode", "logprobs", "--top-logprobs", str(top), "--output",
               str(out), "--no-progress", "--max-tokens", "4")
        bodies = {body_key(b): b for b in server.stats.bodies}
    for body in bodies.values():
        assert body["logprobs"] is True and body["top_logprobs"] == top
        assert "response_format" not in body and "structured_outputs" not in body
    records = read_jsonl(out / "samples.jsonl")
    assert records and all(r["error"] is None for r in records)
    items = []
    for r in records:
        letters = "".join(r["options"])
        expected, mass = expected_letter_probs(distribution(bodies[record_key(r)]), letters, top)
        if expected is None:  # no letter in the top-k: the parser's letter stands
            assert r["letter_probs"] is None and "no option letter" in r["letter_probs_problem"]
            assert r["rule"] == r["parsed"]["rule"]
            continue
        assert r["letter_probs"] == pytest.approx(expected, abs=1e-9)
        assert sum(r["letter_probs"].values()) == pytest.approx(1.0)
        assert r["letter_mass"] == pytest.approx(mass, abs=1e-9)
        best = max(expected.values())
        assert r["extracted"] == next(k for k in letters if expected[k] == best)
        assert r["rule"] == "letter_probs" and r["correct"] == (r["extracted"] == r["gold"])
        items.append((expected, r["gold"], mass, r["item_id"]))
    preambles = [r for r in records if r.get("answer_token") and r["answer_token"]["index"] == 1]
    assert preambles, "some answers start after a non-letter token"
    summary = json.loads((out / "summary.json").read_text())
    calibration = summary["calibration"]
    assert calibration["n_items"] == len(items)
    assert calibration["n_without_letter_probs"] == len(records) - len(items)
    if top == 3:  # letters pushed out of a short top-k get 0, or leave no letter at all
        assert calibration["n_without_letter_probs"] > 0
        assert any(0.0 in r["letter_probs"].values() for r in records if r["letter_probs"])
    pooled = calibration["groups"]["all"]
    for name, value in hand_metrics(items).items():
        stat = pooled[name]
        assert stat["value"] == pytest.approx(value, abs=1e-9), name
        assert stat["ci_low"] <= stat["ci_high"]
    assert {"coarse", "fine", "question_type/domain"} <= set(calibration["groups"])
    fine = [t for t, r in zip(items, [r for r in records if r["letter_probs"]])
            if r["question_type"] == "classification"]
    assert calibration["groups"]["question_type/classification"]["brier"]["value"] == \
        pytest.approx(hand_metrics(fine)["brier"], abs=1e-9)
    assert sum(b["n"] for b in calibration["reliability"]) == len(items)
    assert summary["answer_mode"]["mode"] == "logprobs"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["answer_mode"] == {"mode": "logprobs", "top_logprobs": top}
    assert manifest["generation"]["answer_mode"] == "logprobs"
    if top == 20:
        print(f"\nknown distribution, {len(items)} items: " + ", ".join(
            f"{k} {pooled[k]['value']:.4f}" for k in ("accuracy", "mean_gold_prob", "brier",
                                                       "nll", "ece", "letter_mass", "aurc")))
        report = (out / "report.html").read_text()
        assert "Reliability" in report and (out / "plots" / "reliability.png").exists()
        assert (out / "plots" / "risk_coverage.png").exists()


@pytest.mark.parametrize("provider", ["vllm", "openai"])
def test_choice_mode_constrains_the_request_and_reads_the_letter(tmp_path, provider):
    out = tmp_path / "run"
    with TestServer("cot") as server:  # left alone, it would answer a whole sentence
        server.stats.keep_bodies = True
        ubench("run", "--model", f"{provider}/m", "--base-url", server.base_url, "--dataset",
               "sample", "--answer-mode", "choice", "--output", str(out), "--no-progress",
               "--limit", "30")
        bodies = {body_key(b): b for b in server.stats.bodies}
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 30
    for r in records:
        body = bodies[record_key(r)]
        letters = list(r["options"])
        if provider == "vllm":
            assert body["structured_outputs"] == {"choice": letters}
            assert r["response"] in letters and "answer_text" not in r
        else:
            schema = body["response_format"]["json_schema"]
            assert body["response_format"]["type"] == "json_schema" and schema["strict"] is True
            assert schema["schema"]["properties"]["answer"]["enum"] == letters
            assert json.loads(r["response"]) == {"answer": r["answer_text"]}
        assert "logprobs" not in body
        assert r["constraint_followed"] is True and r["answer_mode"] == "choice"
        assert r["extracted"] in letters and r["rule"] == "lone_letter"
        assert r["correct_official"] == (r["extracted"] == r["gold"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["invalid_rate"] == 0
    assert summary["answer_mode"]["n_constraint_violations"] == 0
    assert "calibration" not in summary


def test_a_server_that_ignores_the_constraint_is_counted(tmp_path):
    out = tmp_path / "run"
    with TestServer(sample_oracle(invalid_every=3)) as server:
        server.behaviour.ignore_constraints = True
        ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--dataset", "sample",
               "--answer-mode", "choice", "--output", str(out), "--no-progress")
    records = read_jsonl(out / "samples.jsonl")
    broken = [r for r in records if not r["constraint_followed"]]
    assert broken and all(r["response"] == "I am not sure." for r in broken)
    assert all(r["rule"].startswith("invalid") for r in broken)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_mode"]["n_constraint_violations"] == len(broken)
    assert summary["answer_mode"]["constraint_violation_rate"] == pytest.approx(
        len(broken) / len(records))
    assert "ignored the constraint" in (out / "summary.md").read_text()


@pytest.mark.parametrize("model, base_url, missing", [
    ("random", None, "the random baseline has no token probabilities"),
    ("openai/o3-mini", None, "OpenAI reasoning models"),
    ("openai/claude-sonnet-4", "https://api.anthropic.com/v1/", "Anthropic"),
    ("anthropic/claude-sonnet-4", None, "the anthropic endpoint does not return logprobs"),
    ("gemini/gemini-2.5-flash", None, "the gemini endpoint does not return logprobs"),
])
def test_logprobs_without_the_capability_exits_2_before_any_request(tmp_path, model, base_url,
                                                                    missing):
    with TestServer("first") as server:
        args = ["--base-url", base_url] if base_url else []
        proc = ubench("run", "--model", model, *args, "--dataset", "sample", "--answer-mode",
                      "logprobs", "--output", str(tmp_path / "run"), check=False,
                      env={"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "k",
                           "GEMINI_API_KEY": "k"})
        assert server.stats.requests == 0
    assert proc.returncode == 2
    assert "--answer-mode logprobs" in proc.stderr and missing in proc.stderr
    assert "token logprobs" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def test_answer_mode_is_part_of_the_resume_configuration_and_the_folder_name(tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TestServer("first") as server:
        ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--dataset", "sample",
               "--answer-mode", "choice", "--limit", "3", "--no-progress")
        out = tmp_path / "results" / "vllm_m-official-choice"
        assert len(read_jsonl(out / "samples.jsonl")) == 3
        proc = ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--dataset",
                      "sample", "--output", str(out), "--limit", "3", check=False)
        assert proc.returncode == 2 and "generation changed" in proc.stderr
        ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--dataset", "sample",
               "--answer-mode", "choice", "--limit", "3", "--output", str(out), "--no-progress")
        assert server.stats.requests == 3  # resumed in the same mode: nothing left to ask


def test_bad_logprobs_from_a_server_are_one_clear_line_per_item(tmp_path):
    out = tmp_path / "run"

    def broken(body):
        return {"A": 2.0}  # a logprob above 0

    with TestServer("first") as server:
        server.behaviour.distribution = broken
        ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--dataset", "sample",
               "--answer-mode", "logprobs", "--limit", "4", "--output", str(out), "--no-progress")
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 4
    for r in records:
        assert r["letter_probs"] is None and r["error"] is None
        assert r["letter_probs_problem"].startswith(f"item {r['item_id']}: logprobs.content[0]")


def test_letter_tokens_in_the_forms_tokenizers_produce():
    assert [token_letter(t, "ABCD") for t in ["A", " B", "(C", " (D", "**A", "B)", " C.",
                                              "\nD", "a", "E", "AB", "The", " "]] == \
        ["A", "B", "C", "D", "A", "B", "C", "D", None, None, None, None, None]
    content = [{"token": " B", "logprob": math.log(0.5), "top_logprobs": [
        {"token": " B", "logprob": math.log(0.5)}, {"token": "B", "logprob": math.log(0.1)},
        {"token": "A", "logprob": math.log(0.2)}, {"token": "Hmm", "logprob": math.log(0.2)}]}]
    reading = read_letter_probs(content, "ABC")
    assert reading.letter_probs == pytest.approx({"A": 0.25, "B": 0.75, "C": 0.0})
    assert reading.letter_mass == pytest.approx(0.8)
    assert unsupported("vllm", "m", None, "logprobs") is None
    assert unsupported("openai", "gpt-4o", None, "logprobs") is None


def test_compare_shows_calibration_and_pairs_runs_on_brier(tmp_path):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        with TestServer("first") as server:
            server.behaviour.distribution = letter_distribution(seed=seed)
            ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--dataset",
                   "sample", "--answer-mode", "logprobs", "--output", str(out), "--no-progress")
        runs.append(out)
    proc = ubench("compare", str(runs[0]), str(runs[1]), "--output", str(tmp_path / "cmp"))
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    part = result["calibration"]
    records = [{r["item_id"]: r for r in read_jsonl(run / "samples.jsonl")} for run in runs]
    shared = [i for i in records[0] if records[0][i]["letter_probs"] and records[1][i]["letter_probs"]]
    assert part["n_items"] == len(shared)

    def brier(r):
        return sum((p - (k == r["gold"])) ** 2 for k, p in r["letter_probs"].items())

    pooled = part["groups"][0]
    assert pooled["group"] == "all" and pooled["n"] == len(shared)
    by_hand = [sum(brier(rec[i]) for i in shared) / len(shared) for rec in records]
    assert pooled["brier"] == pytest.approx(by_hand, abs=1e-9)
    d = pooled["differences"][0]
    assert d["difference"] == pytest.approx(by_hand[1] - by_hand[0], abs=1e-9)
    assert d["ci_low"] <= d["difference"] <= d["ci_high"] and 0 < d["p"] <= 1
    assert "## Calibration" in proc.stdout and "Brier seed1 − seed0" in proc.stdout
    assert "Calibration" in (tmp_path / "cmp" / "compare.html").read_text()


def test_a_study_runs_each_answer_mode_as_its_own_condition(tmp_path):
    path = tmp_path / "study.yaml"
    with TestServer("cot") as server:
        server.behaviour.distribution = letter_distribution()
        path.write_text(f"""name: modes
dataset: sample
limit: 6
models:
  - model: vllm/m
    base_url: {server.base_url}
templates: [official]
answer_modes: [free, choice, logprobs]
""")
        ubench("study", str(path), "--output", str(tmp_path / "study"))
    runs = tmp_path / "study" / "runs" / "vllm_m"
    free, choice, probs = (read_jsonl(runs / f"{mode}-stored-seed0" / "official" / "samples.jsonl")
                           for mode in ("free", "choice", "logprobs"))
    assert all("answer_mode" not in r and r["rule"] == "final_answer" for r in free)  # CoT text
    assert all(r["answer_mode"] == "choice" and r["constraint_followed"] for r in choice)
    assert all(r["answer_mode"] == "logprobs" and r["letter_probs"] for r in probs)


def test_batch_runs_refuse_the_constrained_modes_before_any_request(tmp_path):
    with TestServer("first") as server:
        proc = ubench("run", "--model", "openai/m", "--base-url", server.base_url, "--batch",
                      "--answer-mode", "choice", "--output", str(tmp_path / "run"), check=False)
        assert server.stats.requests == 0
    assert proc.returncode == 2 and "batch runs read free-text answers only" in proc.stderr
