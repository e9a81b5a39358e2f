"""`--shard K/N` splits a run by image, deterministically; `ubench merge` puts the shards together."""
from __future__ import annotations

import json
import shutil
from collections import defaultdict

import pytest

from harness.data.items import iter_examples, parse_shard, shard_of
from harness.data.sources import iter_rows, resolve_source
from tests.conftest import read_jsonl, ubench


def run_shard(tmp_path, name: str, *extra: str):
    out = tmp_path / name
    ubench("run", "--model", "random", "--output", str(out), "--no-progress", *extra)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The sample, unsharded and as shards 1/3, 2/3, 3/3 (random baseline: no server needed)."""
    tmp = tmp_path_factory.mktemp("shards")
    full = run_shard(tmp, "full")
    parts = [run_shard(tmp, f"s{k}", "--shard", f"{k}/3") for k in (1, 2, 3)]
    return tmp, full, parts


def test_shards_split_the_items_by_image_and_cover_them_once(shards):
    _, full, parts = shards
    full_ids = {r["item_id"] for r in read_jsonl(full / "samples.jsonl")}
    seen: dict[str, int] = {}
    shard_of_image: dict[str, set[int]] = defaultdict(set)
    for k, part in enumerate(parts, 1):
        records = read_jsonl(part / "samples.jsonl")
        assert records, f"shard {k}/3 is empty"
        for r in records:
            assert r["item_id"] not in seen
            seen[r["item_id"]] = k
            shard_of_image[r["image_id"]].add(k)
            assert shard_of(r["image_id"], 3) == k
        manifest = json.loads((part / "manifest.json").read_text())
        assert manifest["selection"]["shard"] == f"{k}/3"
    assert set(seen) == full_ids
    assert all(len(ks) == 1 for ks in shard_of_image.values())  # an image never spans shards


def test_a_shard_is_the_same_every_time(shards):
    _, _, parts = shards
    source = resolve_source("sample")
    again = [i.item_id for ex in iter_examples(iter_rows(source), shard=(2, 3)) for i in ex.items]
    assert sorted(again) == sorted(r["item_id"] for r in read_jsonl(parts[1] / "samples.jsonl"))


def test_merge_gives_the_unsharded_result(shards, tmp_path):
    _, full, parts = shards
    merged = tmp_path / "merged"
    proc = ubench("merge", *map(str, reversed(parts)), "--output", str(merged))
    assert "Merged 3 shards" in proc.stdout
    records = read_jsonl(merged / "samples.jsonl")
    full_records = read_jsonl(full / "samples.jsonl")
    key = lambda r: r["item_id"]  # noqa: E731
    assert sorted(records, key=key) == sorted(full_records, key=key)
    summary = json.loads((merged / "summary.json").read_text())
    assert summary == json.loads((full / "summary.json").read_text())
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["selection"]["shard"] is None
    assert [m["shard"] for m in manifest["merged_from"]] == ["1/3", "2/3", "3/3"]


def test_a_shard_killed_mid_line_loses_only_its_torn_line_in_the_merge(shards, tmp_path):
    # A shard that crashed leaves its last line without a newline; merged as it is, that tail
    # would swallow the next shard's first record.
    _, full, parts = shards
    copies = []
    for part in parts:
        copies.append(tmp_path / part.name)
        shutil.copytree(part, copies[-1])
    torn = copies[0] / "samples.jsonl"
    lines = torn.read_bytes().splitlines(keepends=True)
    torn.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])  # the last record cut mid-line
    lost = json.loads(lines[-1])["item_id"]
    proc = ubench("merge", *map(str, copies), "--output", str(tmp_path / "merged"))
    assert "torn last line" in proc.stderr
    merged = {r["item_id"] for r in read_jsonl(tmp_path / "merged" / "samples.jsonl")}
    assert merged == {r["item_id"] for r in read_jsonl(full / "samples.jsonl")} - {lost}


def test_merge_refuses_missing_shards(shards, tmp_path):
    _, _, parts = shards
    proc = ubench("merge", str(parts[0]), str(parts[2]), "--output", str(tmp_path / "m"),
                  check=False)
    assert proc.returncode != 0
    assert "shards missing: 2/3" in proc.stderr
    assert not (tmp_path / "m" / "samples.jsonl").exists()


def test_merge_refuses_a_shard_given_twice(shards, tmp_path):
    _, _, parts = shards
    copy = tmp_path / "s1-again"
    shutil.copytree(parts[0], copy)
    proc = ubench("merge", str(parts[0]), str(copy), str(parts[1]), str(parts[2]),
                  "--output", str(tmp_path / "m"), check=False)
    assert proc.returncode != 0
    assert "shard 1/3 given twice" in proc.stderr


def test_merge_refuses_an_item_in_two_shards(shards, tmp_path):
    _, full, parts = shards
    # A folder claiming to be shard 2/3 but holding every item (e.g. an edited manifest).
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "samples.jsonl").write_text((full / "samples.jsonl").read_text())
    manifest = json.loads((full / "manifest.json").read_text())
    manifest["selection"]["shard"] = "2/3"
    (fake / "manifest.json").write_text(json.dumps(manifest))
    proc = ubench("merge", str(parts[0]), str(fake), str(parts[2]),
                  "--output", str(tmp_path / "m"), check=False)
    assert proc.returncode != 0
    assert "appears in both" in proc.stderr


@pytest.mark.parametrize("field, value", [
    ("template", {"name": "cot", "sha256": "0" * 64}),
    ("generation", {"temperature": 1.0, "max_tokens": 1024, "top_p": None, "seed": 0}),
    ("dataset", {"kind": "hub", "location": "jnirschl/uBench", "revision": "main"}),
])
def test_merge_refuses_shards_of_different_configurations(shards, tmp_path, field, value):
    _, _, parts = shards
    other = tmp_path / "other"
    shutil.copytree(parts[1], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest[field] = value
    (other / "manifest.json").write_text(json.dumps(manifest))
    proc = ubench("merge", str(parts[0]), str(other), str(parts[2]),
                  "--output", str(tmp_path / "m"), check=False)
    assert proc.returncode != 0
    assert "different configuration" in proc.stderr and f"({field} differ)" in proc.stderr


def test_merge_accepts_shards_run_against_different_servers(shards, tmp_path):
    """Each machine has its own server (and maybe dataset path): that is not a difference."""
    _, full, parts = shards
    moved = tmp_path / "moved"
    shutil.copytree(parts[1], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["model"]["base_urls"] = ["http://machine-2:8000/v1"]
    manifest["dataset"]["location"] = "/elsewhere/ubench"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    merged = tmp_path / "m"
    ubench("merge", str(parts[0]), str(moved), str(parts[2]), "--output", str(merged))
    key = lambda r: r["item_id"]  # noqa: E731
    assert sorted(read_jsonl(merged / "samples.jsonl"), key=key) == \
        sorted(read_jsonl(full / "samples.jsonl"), key=key)
    sources = json.loads((merged / "manifest.json").read_text())["merged_from"]
    assert sources[1]["dir"] == str(moved)
    assert sources[1]["model"]["base_urls"] == ["http://machine-2:8000/v1"]


def test_merge_refuses_runs_that_are_not_shards(shards, tmp_path):
    _, full, parts = shards
    proc = ubench("merge", str(full), str(parts[1]), "--output", str(tmp_path / "m"), check=False)
    assert proc.returncode != 0 and "not a shard run" in proc.stderr


@pytest.mark.parametrize("text", ["3", "0/3", "4/3", "a/b", "1/0"])
def test_bad_shard_values_are_refused(text):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def test_cli_refuses_a_bad_shard(tmp_path):
    proc = ubench("run", "--model", "random", "--shard", "4/3", "--output",
                  str(tmp_path / "x"), check=False)
    assert proc.returncode != 0 and "K must be between 1 and N" in proc.stderr
