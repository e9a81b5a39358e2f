"""`ubench compare` and prompt studies, driven through the CLI on the sample."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.data.items import iter_examples
from harness.data.sources import iter_rows, resolve_source
from harness.run import runner
from harness.run.runner import RunConfig, run, run_prompts
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench
from tests.responders import sample_oracle


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A mostly right model (~90%), and the seeded random baseline with seeds 0, 0 and 1."""
    root = tmp_path_factory.mktemp("compare")
    with TestServer(sample_oracle(wrong_every=10)) as server:
        ubench("run", "--model", "vllm/good", "--base-url", server.base_url,
               "--output", str(root / "good"), "--no-progress")
    for name, seed in [("random0", 0), ("random0-again", 0), ("random1", 1)]:
        run(RunConfig(model="random", seed=seed, output=root / name, progress=False))
    return {p.name: p for p in root.iterdir()}


def significant(result: dict) -> list[str]:
    return [row["group"] for row in result["groups"] for d in row["differences"]
            if d["significant"]]


def test_compare_detects_a_planted_difference(runs, tmp_path):
    proc = ubench("compare", str(runs["random0"]), str(runs["good"]), "--output", str(tmp_path))
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["n_shared"] == 136 and [r["label"] for r in result["runs"]] == ["random0", "good"]
    rows = {row["group"]: row for row in result["groups"]}
    coarse = rows["coarse"]
    good = [r for r in read_jsonl(runs["good"] / "samples.jsonl")
            if r["question_type"] != "classification"]
    assert coarse["accuracy"][1] == pytest.approx(sum(r["correct"] for r in good) / len(good))
    diff = coarse["differences"][0]
    assert diff["difference"] == pytest.approx(coarse["accuracy"][1] - coarse["accuracy"][0])
    assert diff["ci_low"] > 0.4 and diff["significant"] and diff["p_holm"] < 1e-4
    assert {"coarse", "question_type/domain"} <= set(significant(result))
    # the Markdown on the terminal and compare.md say the same; the HTML highlights the rows
    assert proc.stdout.startswith((tmp_path / "compare.md").read_text())
    assert "| coarse | 112 |" in proc.stdout and "Significant after Holm: coarse" in proc.stdout
    html = (tmp_path / "compare.html").read_text()
    assert '<tr class="significant"><td>coarse</td>' in html and "http" not in html


def test_compare_finds_no_difference_between_chance_baselines(runs, tmp_path):
    ubench("compare", str(runs["random0"]), str(runs["random1"]), "--output", str(tmp_path))
    result = json.loads((tmp_path / "compare.json").read_text())
    assert significant(result) == []
    assert any(d["difference"] != 0 for row in result["groups"] for d in row["differences"])

    ubench("compare", str(runs["random0"]), str(runs["random0-again"]),
           "--output", str(tmp_path))
    same = json.loads((tmp_path / "compare.json").read_text())
    assert all(d["difference"] == 0 and d["p"] == 1.0
               for row in same["groups"] for d in row["differences"])
    assert "Significant after Holm: none." in (tmp_path / "compare.md").read_text()


def test_compare_refuses_other_dataset_revisions_unless_allowed(runs, tmp_path):
    other = tmp_path / "other-revision"
    shutil.copytree(runs["random1"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["dataset"]["revision"] = "sample-sha256:0000000000000000"
    (other / "manifest.json").write_text(json.dumps(manifest))
    proc = ubench("compare", str(runs["random0"]), str(other), check=False)
    assert proc.returncode != 0 and "different dataset revisions" in proc.stderr
    assert "--allow-mixed" in proc.stderr
    ubench("compare", str(runs["random0"]), str(other), "--allow-mixed",
           "--output", str(tmp_path))
    result = json.loads((tmp_path / "compare.json").read_text())
    assert [r["revision"] for r in result["runs"]] == [
        json.loads((runs["random0"] / "manifest.json").read_text())["dataset"]["revision"],
        "sample-sha256:0000000000000000"]
    assert result["n_shared"] == 136 and result["n_tests"] == len(result["groups"]) > 0
    assert "sample-sha256:0000000000000000" in (tmp_path / "compare.html").read_text()


def test_compare_uses_only_shared_items_and_three_runs(runs, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(runs["good"] / "manifest.json", partial)
    lines = (runs["good"] / "samples.jsonl").read_text().splitlines()
    (partial / "samples.jsonl").write_text("\n".join(lines[:50]) + "\n")
    ubench("compare", str(runs["random0"]), str(partial), str(runs["random1"]),
           "--output", str(tmp_path), "--scorer", "official")
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["n_shared"] == 50 and result["scorer"] == "official"
    assert [len(row["differences"]) for row in result["groups"]] == [2] * len(result["groups"])
    assert result["n_tests"] == 2 * len(result["groups"])


def test_prompt_study_runs_every_template_into_sibling_folders(tmp_path):
    out = tmp_path / "study"
    with TestServer(sample_oracle(wrong_every=5)) as server:
        proc = ubench("run", "--model", "vllm/x", "--base-url", server.base_url,
                      "--prompt", "official", "--prompt", "cot", "--prompt", "answer-tag",
                      "--output", str(out), "--no-progress")
        assert server.stats.requests == 3 * 136
    for name in ("official", "cot", "answer-tag"):
        records = read_jsonl(out / name / "samples.jsonl")
        assert len(records) == 136 and {r["template"] for r in records} == {name}
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["template"]["name"] == name
        assert (out / name / "report.html").exists()
    result = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in result["runs"]] == ["official", "cot", "answer-tag"]
    assert result["n_shared"] == 136
    # the oracle answers the same letters whatever the template: no difference anywhere
    assert significant(result) == []
    assert (out / "compare.md").read_text() in proc.stdout and (out / "compare.html").exists()


def test_prompt_study_encodes_each_image_once(tmp_path, monkeypatch):
    calls = []
    real = runner.encode_image

    def counting(raw, **kwargs):
        calls.append(raw)
        return real(raw, **kwargs)

    monkeypatch.setattr(runner, "encode_image", counting)
    config = RunConfig(model="random", output=tmp_path / "study", progress=False)
    summaries = run_prompts(config, ["official", "cot"])
    assert set(summaries) == {"official", "cot"}
    images = sum(1 for _ in iter_examples(iter_rows(resolve_source("sample"))))
    assert len(calls) == images
    for name in summaries:
        assert len(read_jsonl(tmp_path / "study" / name / "samples.jsonl")) == 136


def _cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line)) - 2  # the outer pipes open and close the row


def test_names_with_a_pipe_stay_one_cell_in_every_markdown_table(runs, tmp_path):
    # template names are restricted to [A-Za-z0-9_.-]; a run's label is its folder's name, free
    piped = tmp_path / "run|<b>"
    shutil.copytree(runs["random1"], piped)
    proc = ubench("compare", str(runs["random0"]), str(piped), "--output", str(tmp_path / "cmp"))
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert proc.stdout.startswith(md)
    assert "| run\\|&lt;b> | random | official |" in md
    assert "| run\\|&lt;b> − random0 [95% CI] |" in md
    tables = [block.splitlines() for block in md.split("\n\n") if block.startswith("|")]
    assert len(tables) == 2
    for lines in tables:
        assert {_cells(line) for line in lines} == {_cells(lines[0])}, lines
