"""Loading uBench rows and expanding them into multiple-choice items."""
from __future__ import annotations

import numpy as np
import pytest

from harness.data.items import (
    EXCLUDED_BY_DEFAULT,
    QUESTION_TYPES,
    dataset_name,
    expand_row,
    iter_examples,
)
from harness.data.sources import DatasetLoadError, iter_rows, resolve_source
from harness.data.synthetic import all_label_names, make_row, ubench_features


def sample_examples(**kw):
    return list(iter_examples(iter_rows(resolve_source("sample")), **kw))


def test_sample_covers_all_question_types_and_several_datasets():
    examples = sample_examples()
    items = [i for e in examples for i in e.items]
    assert {i.question_type for i in items} == set(QUESTION_TYPES)
    assert len({e.dataset for e in examples}) >= 5
    assert all(i.item_id == f"{i.image_id}:{i.question_type}" for i in items)
    assert all(i.gold_index is not None and i.problem is None for i in items)
    # the stored answer is the gold option, and the last option is "none of the above"
    assert all(i.options[-1] == "none of the above" for i in items)


def test_default_filter_leaves_out_opencell_and_flags_change_it():
    assert "opencell" in EXCLUDED_BY_DEFAULT
    assert "opencell" not in {e.dataset for e in sample_examples()}
    assert "opencell" in {e.dataset for e in sample_examples(include_excluded=True)}
    only = sample_examples(datasets=["opencell"])
    assert only and {e.dataset for e in only} == {"opencell"}


def test_held_rows_are_named_by_their_stain():
    assert dataset_name({"dataset": None, "stain": "H2B-mCherry"}) == "held_et_al_2010_h2b"
    assert dataset_name({"dataset": None, "stain": "GalT\u2013EGFP"}) == "held_et_al_2010_galt"
    assert "held_et_al_2010_h2b" in {e.dataset for e in sample_examples()}


def test_question_type_filter_and_limit_counts_items():
    fine = sample_examples(question_types=["classification"])
    assert {i.question_type for e in fine for i in e.items} == {"classification"}
    limited = sample_examples(limit=7)
    assert sum(len(e.items) for e in limited) == 7
    with pytest.raises(ValueError, match="unknown question types"):
        sample_examples(question_types=["colour"])


def _row():
    return make_row(np.random.default_rng(1), "acevedo_et_al_2020", all_label_names())


def test_null_questions_are_skipped():
    row = _row()
    row["questions"]["stain"] = None
    row["questions"]["domain"] = dict(row["questions"]["domain"], question=None)
    types = [i.question_type for i in expand_row(row, 0).items]
    assert "stain" not in types and "domain" not in types and "classification" in types


def test_gold_is_options_index_of_answer_and_disagreement_is_reported():
    row = _row()
    q = row["questions"]["classification"]
    q["answer_idx"] = (q["options"].index(q["answer"]) + 1) % len(q["options"])
    item = expand_row(row, 0).items[0]
    assert item.gold_index == q["options"].index(q["answer"])
    assert item.problem is None
    assert "answer_idx" in item.warning and "questions.classification" in item.warning


def test_answer_not_among_options_is_a_problem_naming_the_field():
    row = _row()
    row["questions"]["modality"]["answer"] = "telepathy"
    item = next(i for i in expand_row(row, 0).items if i.question_type == "modality")
    assert item.gold_index is None
    assert "questions.modality.answer" in item.problem and "telepathy" in item.problem


def test_row_without_questions_or_image_is_reported_not_raised():
    row = _row()
    del row["questions"]
    row["image"] = None
    ex = expand_row(row, 3)
    assert ex.image_problem and "image" in ex.image_problem
    assert ex.items[0].problem and "questions" in ex.items[0].problem


def _write_rows(tmp_path, n=3):
    import datasets as hf

    rng = np.random.default_rng(0)
    rows = [make_row(rng, "kather_et_al_2016", all_label_names()) for _ in range(n)]
    return hf.Dataset.from_list(rows, features=ubench_features(all_label_names()))


def test_local_copies_load_the_same_rows(tmp_path):
    ds = _write_rows(tmp_path)
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    # Arrow shards laid out as on the Hub (perception/0.1.0/*.arrow), copied from the saved dataset
    hub = tmp_path / "hub" / "perception" / "0.1.0"
    hub.mkdir(parents=True)
    for i, shard in enumerate(sorted((tmp_path / "saved").glob("*.arrow"))):
        (hub / f"ubench-test-{i:05d}-of-00001.arrow").write_bytes(shard.read_bytes())
    expected = [r["image_id"] for r in ds]
    for path in (tmp_path / "pq", tmp_path / "saved", tmp_path / "hub"):
        source = resolve_source(str(path))
        assert source.kind == "local" and source.revision.startswith("local-sha256:")
        rows = list(iter_rows(source))
        assert [r["image_id"] for r in rows] == expected
        assert isinstance(rows[0]["image"]["bytes"], bytes)  # undecoded
    # A run on each layout makes the same thumbnails, from the bytes each one reads.
    from harness.report.thumbnails import read_thumbnails
    from tests.conftest import ubench

    made = []
    for path in (tmp_path / "pq", tmp_path / "saved", tmp_path / "hub"):
        out = tmp_path / "runs" / path.name
        ubench("run", "--model", "random", "--dataset", str(path), "--output", str(out),
               "--no-progress")
        made.append(read_thumbnails(out, set(expected)))
    assert set(made[0]) == set(expected)
    assert made[0] == made[1] == made[2]


def test_unloadable_dataset_gives_one_clear_message(tmp_path):
    with pytest.raises(DatasetLoadError, match="not 'sample', 'hub'"):
        resolve_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLoadError, match="no Parquet files"):
        list(iter_rows(resolve_source(str(tmp_path / "empty"))))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetLoadError, match="could not load dataset"):
        list(iter_rows(resolve_source(str(tmp_path / "bad.parquet"))))


def test_hub_source_is_pinned_by_default():
    src = resolve_source("hub")
    assert src.revision == "3f2c5b590bc7a208d5b60f3527ce4c76a331aa2b"
    assert resolve_source("hub", "abc").revision == "abc"


def test_real_rows_expand_with_their_gold(real10, real10_dataset):
    import json

    truth = {q["image_id"]: q for q in map(json.loads, (real10 / "questions.jsonl").open())}
    examples = list(iter_examples(iter_rows(resolve_source(str(real10_dataset)))))
    assert len(examples) == 10
    for e in examples:
        (item,) = e.items  # coarse questions are null in this copy
        q = truth[e.image_id]
        assert item.question_type == "classification" and item.dataset == "acevedo_et_al_2020"
        assert item.options == tuple(q["options"])
        assert item.gold_index == q["answer_idx"] and item.options[item.gold_index] == q["answer"]
        assert item.warning is None
