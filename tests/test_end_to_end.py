"""`ubench run` driven as a user would: the CLI, the loopback server, the files it writes."""
from __future__ import annotations

import json

import pytest

from harness.data.images import encode_image
from harness.data.items import COARSE_TYPES, FINE_TOTAL_EXCLUDED, iter_examples
from harness.data.sources import iter_rows, resolve_source
from harness.prompts import load_template, render
from harness.servers.testserver import TestServer, request_key
from tests.conftest import read_jsonl, ubench


def planned_answers():
    """Answer every sample item in one of three ways, chosen by its position:
    the gold letter alone, a wrong letter, or "The answer is (gold)." (robust right, official wrong).
    """
    template = load_template("official")
    answers, expected = {}, {}
    n = 0
    for example in iter_examples(iter_rows(resolve_source("sample"))):
        url = encode_image(example.image_bytes).data_url
        for item in example.items:
            text = render(template, item.question, item.option_map)[0]["content"][1]["text"]
            gold = item.gold_letter
            wrong = next(x for x in item.letters if x != gold)
            kind = n % 3
            answers[request_key(text, url)] = [gold, wrong, f"The answer is ({gold})."][kind]
            expected[item.item_id] = {"robust": kind != 1, "official": kind == 0, "item": item}
            n += 1
    return answers, expected


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def test_run_against_an_openai_compatible_server_writes_the_four_files(tmp_path):
    answers, expected = planned_answers()
    out = tmp_path / "run"
    with TestServer("answers", answers=answers) as server:
        proc = ubench("run", "--model", "vllm/any", "--base-url", server.base_url,
                      "--dataset", "sample", "--output", str(out), "--seed", "7",
                      "--max-tokens", "16", "--concurrency", "8", subprocess_=True)
        assert server.stats.requests == len(expected)
        assert set(server.stats.models) == {"any"}
    assert {p.name for p in out.iterdir()} >= {"samples.jsonl", "manifest.json", "summary.json",
                                               "summary.md"}
    records = read_jsonl(out / "samples.jsonl")
    assert sorted(r["item_id"] for r in records) == sorted(expected)  # one record per item
    for r in records:
        e = expected[r["item_id"]]
        assert r["correct"] is e["robust"] and r["correct_official"] is e["official"]
        assert r["gold"] == e["item"].gold_letter
        assert r["options"] == e["item"].option_map
        assert r["template"] == "official" and len(r["template_sha256"]) == 64
        assert r["error"] is None and r["latency_s"] >= 0 and r["usage"]["prompt_tokens"] == 10
        assert "base64" not in json.dumps(r)  # the log never carries the image payload
    answered = {r["item_id"]: r["response"] for r in records}
    assert any(v.startswith("The answer is (") for v in answered.values())  # raw, untouched

    summary = json.loads((out / "summary.json").read_text())
    items = [e for e in expected.values()]
    coarse = [e for e in items if e["item"].question_type in COARSE_TYPES]
    fine = [e for e in items if e["item"].question_type == "classification"
            and e["item"].dataset not in FINE_TOTAL_EXCLUDED]
    for scorer in ("robust", "official"):
        groups = summary["scorers"][scorer]
        assert groups["coarse"]["accuracy"] == pytest.approx(mean(e[scorer] for e in coarse))
        assert groups["fine"]["accuracy"] == pytest.approx(mean(e[scorer] for e in fine))
        assert groups["coarse"]["n"] == len(coarse) and groups["fine"]["n"] == len(fine)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["kind"] == "sample" and manifest["dataset"]["revision"]
    assert manifest["template"]["name"] == "official"
    assert manifest["template"]["sha256"] == load_template("official").sha256
    assert manifest["model"]["spec"] == "vllm/any" and manifest["model"]["model"] == "any"
    assert manifest["generation"] == {"temperature": 0.0, "max_tokens": 16, "top_p": None,
                                      "seed": 7}
    assert manifest["seed"] == 7 and manifest["harness_version"]
    assert "run" in manifest["command_line"]

    md = (out / "summary.md").read_text()
    robust_coarse = 100 * summary["scorers"]["robust"]["coarse"]["accuracy"]
    assert f"{robust_coarse:.2f} ±" in md and f"{robust_coarse:.2f} ±" in proc.stdout
    assert "| scorer | coarse | fine |" in proc.stdout


def test_score_recomputes_the_summary_from_samples_alone(tmp_path):
    out = tmp_path / "run"
    ubench("run", "--model", "random", "--output", str(out), "--no-progress")
    before = json.loads((out / "summary.json").read_text())
    (out / "summary.json").unlink()
    (out / "summary.md").unlink()
    ubench("score", str(out))
    assert json.loads((out / "summary.json").read_text()) == before
    assert (out / "summary.md").exists()


def test_random_baseline_is_seeded_and_near_chance(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    ubench("run", "--model", "random", "--seed", "1", "--output", str(a), "--no-progress")
    ubench("run", "--model", "random", "--seed", "1", "--output", str(b), "--no-progress")
    ubench("run", "--model", "random", "--seed", "2", "--output", str(c), "--no-progress")
    ra, rb, rc = (read_jsonl(p / "samples.jsonl") for p in (a, b, c))
    key = lambda rs: sorted((r["item_id"], r["response"]) for r in rs)  # noqa: E731
    assert key(ra) == key(rb) and key(ra) != key(rc)
    s = json.loads((a / "summary.json").read_text())["scorers"]["robust"]["coarse"]
    assert abs(s["accuracy"] - s["chance"]) < 0.15


def test_real_rows_get_the_official_prompt_and_are_scored(real10, real10_dataset, tmp_path):
    truth = {q["image_id"]: q for q in map(json.loads, (real10 / "questions.jsonl").open())}
    with TestServer("first") as server:  # always answers "A"
        server.stats.keep_bodies = True
        ubench("run", "--model", "openai/gpt-4o", "--base-url", server.base_url,
               "--dataset", str(real10_dataset), "--output", str(tmp_path / "run"),
               "--no-progress", env={"OPENAI_API_KEY": "sk-test"})
        bodies = server.stats.bodies
    assert len(bodies) == 10
    for body in bodies:
        (msg,) = body["messages"]
        image, text = msg["content"]
        assert image["type"] == "image_url" and image["image_url"]["detail"] == "high"
        assert image["image_url"]["url"].startswith("data:image/png;base64,")
        lettered = {k: "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(q["options"]))
                    for k, q in truth.items()}
        image_id = next(k for k, v in lettered.items() if text["text"].endswith(v))
        q, lettered = truth[image_id], lettered[image_id]
        assert text["text"] == ("Answer with a single letter, no extra details.\nQuestion:"
                                + q["question"] + "\n" + lettered)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    expected = sum(q["answer_idx"] == 0 for q in truth.values()) / 10
    assert summary["scorers"]["official"]["fine"]["accuracy"] == pytest.approx(expected)
    assert summary["scorers"]["robust"]["dataset/acevedo_et_al_2020/fine"]["n"] == 10


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt-4o"], "unknown provider"),
    (["--model", "vllm/"], "missing the model name"),
    (["--model", "random", "--prompt", "nope"], "unknown prompt"),
    (["--model", "random", "--dataset", "/nonexistent/ubench"], "not 'sample', 'hub'"),
])
def test_bad_arguments_fail_with_a_clear_message(tmp_path, args, message):
    proc = ubench("run", *args, "--output", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2  # usage or input error, nothing sent
    assert message in proc.stderr and "Traceback" not in proc.stderr
