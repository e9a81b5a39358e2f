"""Few-shot templates: examples with their images as earlier turns, never the evaluated image,
chosen the same way on resume and in every shard, each example image encoded once."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harness.prompts import TemplateError, load_template
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench

OFFICIAL_TEXT = "Answer with a single letter, no extra details.\nQuestion:{question}\n{options}"


def few_shot_template(folder: Path, name: str = "shots", **examples) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "description": "few-shot test template",
        "examples": {"k": 3, **examples},
        "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                     {"role": "user", "content": [{"type": "image"},
                                                  {"type": "text", "text": OFFICIAL_TEXT}]}]}))
    return path


def run_few_shot(server, template: Path, out: Path, *extra: str, check: bool = True):
    return ubench("run", "--model", "openai/m", "--base-url", server.base_url, "--prompt",
                  str(template), "--output", str(out), "--no-progress", *extra, check=check)


def examples_by_item(folder: Path) -> dict[str, list[str]]:
    return {r["item_id"]: r["examples"] for r in read_jsonl(folder / "samples.jsonl")
            if not r.get("error")}


def url_sha(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def test_examples_are_earlier_turns_with_their_images_and_never_the_evaluated_image(tmp_path):
    # A bank of 4 images for the whole pool: the evaluated image is often in it and must be
    # skipped; each example turn carries its own image and the gold letter as the answer.
    template = few_shot_template(tmp_path, select="random", bank_size=4, answer="ANSWER: {letter}")
    with TestServer("first") as server:
        server.stats.keep_bodies = True
        run_few_shot(server, template, tmp_path / "run")
        bodies = server.stats.bodies
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert records and not any(r["error"] for r in records)
    bank = {e.split(":")[0] for ids in examples_by_item(tmp_path / "run").values() for e in ids}
    assert len(bank) == 4
    assert sum(r["image_id"] in bank for r in records) > 0  # the exclusion was exercised
    gold = {}
    for r in read_jsonl(tmp_path / "run" / "samples.jsonl"):
        gold[r["item_id"]] = r["gold"]
    for r in records:
        assert len(r["examples"]) == 3
        assert r["image_id"] not in {e.split(":")[0] for e in r["examples"]}
        roles = [m["role"] for m in r["prompt"]]
        assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
        answers = [m["content"][0]["text"] for m in r["prompt"] if m["role"] == "assistant"]
        assert answers == [f"ANSWER: {gold[e]}" for e in r["examples"]]
        shown = [p.get("image_id") for m in r["prompt"] for p in m["content"]
                 if p["type"] == "image"]
        assert shown == [e.split(":")[0] for e in r["examples"]] + [None]
    # on the wire: four different images per request, the evaluated one last and only there
    for body in bodies:
        urls = [p["image_url"]["url"] for m in body["messages"] for p in m["content"]
                if p["type"] == "image_url"]
        assert len(urls) == 4 and len(set(urls)) == 4


def test_exclude_same_dataset_and_same_question_type(tmp_path):
    template = few_shot_template(tmp_path, select="same_question_type", exclude_same_dataset=True)
    with TestServer("first") as server:
        run_few_shot(server, template, tmp_path / "run")
    records = {r["item_id"]: r for r in read_jsonl(tmp_path / "run" / "samples.jsonl")}
    for r in records.values():
        assert not r["error"]
        for e in r["examples"]:
            assert e.split(":")[1] == r["question_type"]
            if e in records:
                assert records[e]["dataset"] != r["dataset"]


def test_too_few_eligible_examples_is_an_error_record_per_item(tmp_path):
    # one source dataset, examples from other datasets only: nothing is eligible
    template = few_shot_template(tmp_path, exclude_same_dataset=True)
    with TestServer("first") as server:
        proc = run_few_shot(server, template, tmp_path / "run", "--datasets",
                            "kather_et_al_2016", check=False)
        assert server.stats.requests == 0
    assert proc.returncode == 3  # no item could be answered
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert records and all(r["error"]["field"] == "examples" for r in records)
    assert "eligible example" in records[0]["error"]["message"]
    assert records[0]["item_id"] in records[0]["error"]["message"]


def test_example_choice_is_the_same_on_resume_and_in_every_shard(tmp_path):
    template = few_shot_template(tmp_path, select="same_question_type", bank_size=5)
    with TestServer("first") as server:
        run_few_shot(server, template, tmp_path / "whole")
        whole = examples_by_item(tmp_path / "whole")
        # kill -9 after half of the items: keep half the log, resume with the same command
        log = tmp_path / "whole" / "samples.jsonl"
        lines = log.read_text().splitlines(keepends=True)
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        (resumed / "samples.jsonl").write_text("".join(lines[: len(lines) // 2]))
        (resumed / "manifest.json").write_text((tmp_path / "whole" / "manifest.json").read_text())
        before = server.stats.requests
        run_few_shot(server, template, resumed, "--no-cache")
        assert server.stats.requests - before == len(lines) - len(lines) // 2
        for k in (1, 2):
            run_few_shot(server, template, tmp_path / f"shard{k}", "--shard", f"{k}/2")
    assert examples_by_item(resumed) == whole
    shards = {**examples_by_item(tmp_path / "shard1"), **examples_by_item(tmp_path / "shard2")}
    assert shards == whole
    assert len(set(map(tuple, whole.values()))) > 5  # the choice really varies by item


def test_an_example_image_is_encoded_once_however_many_items_show_it(tmp_path, monkeypatch):
    import harness.run.runner as runner

    encoded = Counter()
    real = runner.encode_image

    def counting(raw, **kwargs):
        encoded[hashlib.sha256(raw).hexdigest()] += 1
        return real(raw, **kwargs)

    monkeypatch.setattr(runner, "encode_image", counting)
    template = few_shot_template(tmp_path, select="random", bank_size=4)
    with TestServer("first") as server:
        server.stats.keep_bodies = True
        run_few_shot(server, template, tmp_path / "run")
        bodies = server.stats.bodies
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    uses = Counter(e.split(":")[0] for r in records for e in r["examples"])
    evaluated = {r["image_id"] for r in records}
    assert len(uses) == 4 and max(uses.values()) > 20  # each bank image shown to many items
    # every image once, whether shown as an example, evaluated, or both
    assert sum(encoded.values()) == len(evaluated | set(uses)) and max(encoded.values()) == 1
    assert set(uses) & evaluated  # some bank images are also evaluated (and were not re-encoded)
    # the bodies carry the examples' images byte for byte as encoded, one string per image
    example_urls = {url_sha(p["image_url"]["url"]) for b in bodies for m in b["messages"][:-1]
                    for p in m["content"] if p["type"] == "image_url"}
    assert len(example_urls) == 4


@pytest.mark.parametrize("examples, message", [
    ({"k": 0}, "examples/k"),
    ({"k": 3, "select": "nearest"}, "examples/select"),
    ({"k": 3, "colour": "red"}, "examples"),
    ({"k": 3, "select": "same_dataset", "exclude_same_dataset": True}, "contradict"),
    ({"k": 3, "bank_size": 3}, "bank_size"),
    ({"k": 3, "answer": "{gold}"}, "examples/answer"),
])
def test_bad_examples_blocks_are_refused_naming_the_field(tmp_path, examples, message):
    path = few_shot_template(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["examples"] = examples
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TemplateError, match=message):
        load_template(str(path))


def test_builtin_few_shot_template_is_k3_same_question_type():
    t = load_template("few-shot-3")
    assert t.examples["k"] == 3 and t.examples["select"] == "same_question_type"
    assert t.examples["pool"] == "run"
