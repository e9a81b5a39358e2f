"""Option-order robustness: seeded shuffles and circular rotations, as data and through the CLI."""
from __future__ import annotations

import json

import pytest

from harness.data.items import Item, iter_examples
from harness.data.options_order import rotations, shuffled, transform
from harness.data.sources import iter_rows, resolve_source
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench
from tests.responders import sample_oracle

ITEM = Item("img:stain", "img", "kather_et_al_2016", "stain", "Which stain?",
            ("H&E", "Giemsa", "DAPI", "Gram", "none of the above"), gold_index=1)


def shown_as_original(item: Item) -> bool:
    return all(item.options[i] == ITEM.options[j] for i, j in enumerate(item.option_order))


def test_shuffle_is_seeded_per_item_and_gold_follows_its_option():
    a, b = shuffled(ITEM, 7), shuffled(ITEM, 7)
    assert a == b  # same seed and item id: same order, whatever else happens in the run
    orders = {shuffled(ITEM, seed).options for seed in range(20)}
    assert len(orders) > 10  # different seeds give different orders
    for seed in range(20):
        item = shuffled(ITEM, seed)
        assert sorted(item.options) == sorted(ITEM.options)
        assert item.options[item.gold_index] == "Giemsa"
        assert shown_as_original(item) and item.item_id == ITEM.item_id
    other = Item(**{**ITEM.__dict__, "item_id": "other:stain"})
    assert any(shuffled(other, s).options != shuffled(ITEM, s).options for s in range(5))


def test_rotations_put_the_gold_answer_under_every_letter_once():
    rotated = rotations(ITEM)
    assert [r.item_id for r in rotated] == [f"img:stain#r{k}" for k in range(5)]
    assert sorted(r.gold_letter for r in rotated) == list("ABCDE")
    assert rotated[1].options == ("Giemsa", "DAPI", "Gram", "none of the above", "H&E")
    assert rotated[1].option_order == (1, 2, 3, 4, 0) and rotated[1].rotation == 1
    assert all(shown_as_original(r) and r.options[r.gold_index] == "Giemsa" for r in rotated)


def test_shuffle_then_rotate_records_the_order_against_the_stored_options():
    example = next(iter_examples(iter_rows(resolve_source("sample"))))
    originals = {i.item_id: i for i in example.items}
    out = next(transform([example], shuffle_seed=3, circular=True))
    assert len(out.items) == sum(len(i.options) for i in originals.values())
    for item in out.items:
        original = originals[item.item_id.split("#r")[0]]
        assert [original.options[j] for j in item.option_order] == list(item.options)
        assert item.options[item.gold_index] == original.options[original.gold_index]


def test_cli_circular_run_counts_an_item_only_if_every_rotation_is_right(tmp_path):
    out = tmp_path / "circ"
    with TestServer("first") as server:  # always answers the first letter shown
        ubench("run", "--model", "vllm/x", "--base-url", server.base_url, "--output", str(out),
               "--circular", "--question-types", "domain,modality", "--no-progress")
    records = read_jsonl(out / "samples.jsonl")
    base = {r["item_id"].split("#r")[0] for r in records}
    assert len(records) == sum(len(r["options"]) for r in records if r["rotation"] == 0)
    assert all(r["item_id"].endswith(f"#r{r['rotation']}") and r["option_order"] for r in records)
    summary = json.loads((out / "summary.json").read_text())
    circular = summary["circular"]
    assert circular["n_items"] == len(base)
    # "A" is right in exactly one rotation of each item, so never in all of them
    assert circular["scorers"]["robust"]["coarse"]["accuracy"] == 0.0
    assert summary["scorers"]["robust"]["coarse"]["accuracy"] == pytest.approx(
        len(base) / len(records))
    assert summary["letter_bias"]["letters"]["A"]["predicted"] == len(records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options_order"] == {"shuffle_seed": None, "circular": True}
    assert "Circular evaluation" in (out / "report.html").read_text()


def test_cli_shuffle_records_the_mapping_and_refuses_to_resume_another_order(tmp_path):
    out = tmp_path / "shuffled"
    with TestServer(sample_oracle()) as server:
        args = ["run", "--model", "vllm/x", "--base-url", server.base_url, "--output", str(out),
                "--no-progress"]
        ubench(*args, "--shuffle-options", "11")
        records = read_jsonl(out / "samples.jsonl")
        summary = json.loads((out / "summary.json").read_text())
        # the oracle finds the gold option by its text, so it stays right under any order
        assert summary["scorers"]["robust"]["coarse"]["accuracy"] == 1.0
        stored = {i.item_id: i for e in iter_examples(iter_rows(resolve_source("sample")))
                  for i in e.items}
        moved = 0
        for r in records:
            original = stored[r["item_id"]]
            assert [original.options[j] for j in r["option_order"]] == list(r["options"].values())
            assert r["options"][r["gold"]] == original.options[original.gold_index]
            moved += r["gold"] != original.gold_letter
        assert moved > len(records) / 2
        assert json.loads((out / "manifest.json").read_text())["options_order"] == {
            "shuffle_seed": 11, "circular": False}

        again = ubench(*args, "--shuffle-options", "12", check=False)
        assert again.returncode != 0 and "options_order changed" in again.stderr
        plain = ubench(*args, check=False)
        assert plain.returncode != 0 and "options_order changed" in plain.stderr
