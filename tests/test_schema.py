"""The results format's version: every samples.jsonl line and summary.json carry `schema_version`;
run folders written before it existed (version 1, no field) work with every command, and one
written by a newer harness is refused with exit 2 and one line naming the file and line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.report.schema import (
    SCHEMA_VERSION,
    ErrorInfo,
    SampleRecord,
    SamplesError,
)
from harness.servers.testserver import TestServer, prompt_parts
from tests.conftest import read_jsonl, ubench

HEDGE = "It has granules, hard to say which."


def run(out: Path, *extra: str) -> Path:
    ubench("run", "--model", "random", "--output", str(out), "--no-progress", *extra)
    return out


def strip_versions(folder: Path) -> None:
    """Make `folder` a run folder as the harness wrote it before `schema_version` existed."""
    lines = read_jsonl(folder / "samples.jsonl")
    for line in lines:
        assert line.pop("schema_version") == SCHEMA_VERSION
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = json.loads((folder / "summary.json").read_text())
    del summary["schema_version"]
    (folder / "summary.json").write_text(json.dumps(summary))


def bump_version(path: Path, line: int = 2) -> None:
    """Line `line` of a samples.jsonl as a newer harness would write it."""
    lines = path.read_text().splitlines()
    record = json.loads(lines[line - 1])
    record["schema_version"] = SCHEMA_VERSION + 1
    lines[line - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def without_version(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "schema_version"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A run, a second seed, and the same run as two shards: fresh, then as version-1 copies."""
    tmp = tmp_path_factory.mktemp("schema")
    fresh = {"a": run(tmp / "fresh" / "a"), "b": run(tmp / "fresh" / "b", "--seed", "1"),
             "s1": run(tmp / "fresh" / "s1", "--shard", "1/2"),
             "s2": run(tmp / "fresh" / "s2", "--shard", "2/2")}
    old = {}
    for name, folder in fresh.items():
        old[name] = tmp / "old" / name
        shutil.copytree(folder, old[name])
        strip_versions(old[name])
    return tmp, fresh, old


def test_every_line_and_the_summary_carry_the_version(folders):
    _, fresh, _ = folders
    lines = read_jsonl(fresh["a"] / "samples.jsonl")
    assert lines and all(r["schema_version"] == SCHEMA_VERSION for r in lines)
    summary = json.loads((fresh["a"] / "summary.json").read_text())
    assert next(iter(summary)) == "schema_version" and summary["schema_version"] == SCHEMA_VERSION


def test_a_folder_written_before_the_version_scores_reports_merges_and_compares_alike(
        folders, tmp_path):
    tmp, fresh, old = folders
    before = json.loads((fresh["a"] / "summary.json").read_text())
    lines = (old["a"] / "samples.jsonl").read_text()
    ubench("score", str(old["a"]))
    assert json.loads((old["a"] / "summary.json").read_text()) == before  # version now written
    assert (old["a"] / "samples.jsonl").read_text() == lines  # the lines are never rewritten
    ubench("report", str(old["a"]), "--max-samples", "5")
    assert "samples-data" in (old["a"] / "report.html").read_text()
    columns = {f.name: str(f.type) for f in pq.read_schema(old["a"] / "samples.parquet")}
    assert "schema_version" not in columns  # the lines hold none; the other types as declared
    assert (columns["correct"], columns["latency_s"], columns["rotation"], columns["error"]) == \
        ("bool", "double", "int64", "string")

    merged = tmp_path / "merged"
    ubench("merge", str(old["s1"]), str(old["s2"]), "--output", str(merged))
    assert without_version(json.loads((merged / "summary.json").read_text())) == \
        without_version(before)
    assert all("schema_version" not in r for r in read_jsonl(merged / "samples.jsonl"))

    ubench("compare", str(old["a"]), str(old["b"]), "--output", str(tmp_path / "old-cmp"))
    ubench("compare", str(fresh["a"]), str(fresh["b"]), "--output", str(tmp_path / "new-cmp"))
    old_cmp, new_cmp = (json.loads((tmp_path / d / "compare.json").read_text())
                        for d in ("old-cmp", "new-cmp"))
    assert old_cmp["groups"] == new_cmp["groups"]


def test_extract_and_its_judge_read_lines_written_before_the_version(folders, tmp_path):
    _, _, old = folders
    lines = read_jsonl(old["a"] / "samples.jsonl")[:6]
    for line in lines[:2]:
        line["response"] = HEDGE  # left invalid by the rules: the judge is asked
    source, target = tmp_path / "old.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in lines))

    def judge(body: dict) -> str:
        return "A" if "granules" in prompt_parts(body)[0] else "NONE"

    with TestServer(judge) as server:
        ubench("extract", "-i", str(source), "-o", str(target), "--judge", "vllm/judge",
               "--judge-base-url", server.base_url)
        assert server.stats.models["judge"] == 2
    out = read_jsonl(target)
    assert [o["rule"] for o in out[:2]] == ["judge", "judge"]
    assert [o["extracted"] for o in out[2:]] == [r["extracted"] for r in lines[2:]]
    assert all(o["correct"] == (o["extracted"] == o["gold"]) for o in out)


@pytest.mark.parametrize("command", ["score", "report", "compare", "merge", "extract"])
def test_a_line_of_a_newer_version_is_refused_with_exit_2_and_one_line(folders, tmp_path,
                                                                        command):
    _, fresh, _ = folders
    newer = {}
    for name in ("a", "s1"):
        newer[name] = tmp_path / name
        shutil.copytree(fresh[name], newer[name])
        bump_version(newer[name] / "samples.jsonl")
    args = {"score": ["score", str(newer["a"])],
            "report": ["report", str(newer["a"])],
            "compare": ["compare", str(fresh["b"]), str(newer["a"]), "-o", str(tmp_path / "c")],
            "merge": ["merge", str(newer["s1"]), str(fresh["s2"]), "-o", str(tmp_path / "m")],
            "extract": ["extract", "-i", str(newer["a"] / "samples.jsonl"),
                        "-o", str(tmp_path / "x.jsonl")]}[command]
    proc = ubench(*args, check=False)
    where = newer["a" if command != "merge" else "s1"] / "samples.jsonl"
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"Error: {where}:2: schema_version {SCHEMA_VERSION + 1} is "
                                   f"newer than this harness reads ({SCHEMA_VERSION}); upgrade "
                                   "ubench-harness to read it")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "m" / "summary.json").exists()


def test_a_summary_of_a_newer_version_is_refused_by_report(folders, tmp_path):
    _, fresh, _ = folders
    folder = tmp_path / "a"
    shutil.copytree(fresh["a"], folder)
    summary = json.loads((folder / "summary.json").read_text())
    summary["schema_version"] = SCHEMA_VERSION + 1
    (folder / "summary.json").write_text(json.dumps(summary))
    proc = ubench("report", str(folder), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"Error: {folder / 'summary.json'}: schema_version")


def test_a_study_over_cells_written_before_the_version_resumes_then_refuses_a_newer_one(
        tmp_path):
    study = tmp_path / "study.yaml"
    out = tmp_path / "out"
    with TestServer("random") as server:
        study.write_text(f"name: old\ndataset: sample\nlimit: 6\nmodels:\n  - model: openai/vlm\n"
                         f"    base_url: {server.base_url}\ntemplates: [official]\n")
        ubench("study", str(study), "--output", str(out))
        before = json.loads((out / "study.json").read_text())["leaderboard"]
        (cell,) = [p.parent for p in (out / "runs").rglob("samples.jsonl")]
        strip_versions(cell)
        sent = server.stats.requests
        ubench("study", str(study), "--output", str(out))
        assert server.stats.requests == sent  # every item of the old cell counts as answered
        assert json.loads((out / "study.json").read_text())["leaderboard"] == before
        bump_version(cell / "samples.jsonl", line=1)
        proc = ubench("study", str(study), "--output", str(out), check=False)
        assert server.stats.requests == sent
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("upgrade ubench-harness to read it")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_record_round_trips_and_keeps_keys_it_does_not_know():
    record = SampleRecord("img:domain", "img", "kather_et_al_2016", "domain", {"A": "x", "B": "y"},
                          gold="A", error=ErrorInfo.bad_input("img:domain", "field 'image': bad",
                                                              "image"))
    line = {**record.to_json(), "added_later": {"k": 1}}
    back = SampleRecord.from_json(line, "f:1")
    assert back.extra == {"added_later": {"k": 1}} and back.to_json() == line
    assert back.error == record.error and back.error.field == "image"
    assert "response" not in line and line["error"]["type"] == "bad_input"


@pytest.mark.parametrize("change, message", [
    ({"correct": "yes"}, "f:3: field 'correct' must be true or false or null, got a string"),
    ({"options": ["x", "y"]}, "f:3: field 'options' must be an object, got a list"),
    ({"options": {"A": 1}}, "f:3: field 'options' must map letters to texts"),
    ({"attempts": True}, "f:3: field 'attempts' must be an integer or null, got true or false"),
    ({"error": {"type": "server"}}, "f:3: missing field error.message"),
    ({"schema_version": "1"}, "f:3: field 'schema_version' must be a positive integer, got '1'"),
    ({"options": {}}, "f:3: field 'options' must map letters to texts"),
    ({"judge": {}}, "f:3: field 'judge.model' must be a string"),
    ({"letter_probs": {"A": "0.5"}}, "f:3: field 'letter_probs' must map letters to numbers"),
    ({"attempts": 2 ** 63}, f"f:3: field 'attempts' is out of range ({2 ** 63})"),
    ({"error": {"type": "server", "message": "m", "status": -2 ** 64}},
     f"f:3: field 'error.status' is out of range ({-2 ** 64})"),
])
def test_a_bad_line_is_refused_naming_the_line_and_the_field(change, message):
    good = SampleRecord("img:domain", "img", "kather_et_al_2016", "domain", {"A": "x", "B": "y"},
                        gold="A", response="A", extracted="A", rule="lone_letter", correct=True,
                        correct_official=True).to_json()
    with pytest.raises(SamplesError) as info:
        SampleRecord.from_json({**good, **change}, "f:3")
    assert str(info.value) == message


@pytest.mark.parametrize("change", [{"options": {}}, {"judge": {}},
                                    {"letter_probs": {"A": "x"}}, {"attempts": 2 ** 63}])
def test_score_refuses_a_line_that_would_break_it_before_writing(folders, tmp_path, change):
    _, fresh, _ = folders
    folder = tmp_path / "run"
    shutil.copytree(fresh["a"], folder)
    summary = (folder / "summary.json").read_bytes()
    lines = (folder / "samples.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), **change})
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")
    proc = ubench("score", str(folder), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"Error: {folder / 'samples.jsonl'}:3: field ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (folder / "summary.json").read_bytes() == summary  # nothing rewritten


@pytest.mark.parametrize("extra", [[], ["--max-cost", "5"]])
def test_resuming_a_folder_of_a_newer_version_is_refused_with_exit_2(folders, tmp_path, extra):
    _, fresh, _ = folders
    folder = tmp_path / "run"
    shutil.copytree(fresh["a"], folder)
    bump_version(folder / "samples.jsonl")
    prices = tmp_path / "prices.yaml"
    prices.write_text(json.dumps({"models": {"random": {"input": 0, "output": 0}}}))
    proc = ubench("run", "--model", "random", "--output", str(folder), "--no-progress",
                  "--price-file", str(prices), *extra, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"schema_version {SCHEMA_VERSION + 1} is newer" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
