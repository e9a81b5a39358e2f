"""`ubench extract`, run as a user runs it: any tool's outputs in, parsed lines out."""
from __future__ import annotations

import json

from tests.conftest import read_jsonl, ubench
from tests.test_parsing import CORPUS

BLOOD = {"A": "platelet", "B": "eosinophil", "C": "neutrophil"}


def write_lines(path, lines):
    text = [line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
            for line in lines]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def test_extract_parses_good_lines_and_reports_bad_ones(tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, [
        {"id": 1, "response": "<think>A?</think>The answer is (B).", "options": BLOOD, "gold": "B"},
        {"id": 2, "response": "A neutrophil.", "options": ["platelet", "eosinophil", "neutrophil"],
         "gold": "A"},
        "{not json",
        {"id": 4, "options": BLOOD},
        {"id": 5, "response": None, "options": BLOOD},
        {"id": 6, "response": "B", "options": "A) platelet B) eosinophil"},
        {"id": 7, "response": "B", "options": {"A": "platelet", "BB": "eosinophil"}},
        {"id": 8, "response": "B", "options": BLOOD, "gold": "Z"},
        "",
        ["a", "list"],
        {"id": 11, "response": "I cannot tell.", "options": BLOOD},
    ])
    proc = ubench("extract", "--input", str(source), "--output", str(target))
    out = read_jsonl(target)
    assert len(out) == 10  # the blank line is skipped, every other line is answered

    assert out[0]["response"] == "<think>A?</think>The answer is (B)."  # raw text kept
    assert (out[0]["extracted"], out[0]["rule"], out[0]["correct"]) == ("B", "final_answer", True)
    assert (out[1]["extracted"], out[1]["rule"], out[1]["correct"]) == ("C", "option_text", False)
    assert out[1]["options"] == ["platelet", "eosinophil", "neutrophil"]  # the input line, as given
    assert (out[9]["extracted"], out[9]["rule"]) == (None, "invalid:refusal")
    errors = {o["line"]: o for o in out if "error" in o}
    assert sorted(errors) == [3, 4, 5, 6, 7, 8, 10]
    assert errors[3]["error"].startswith("not valid JSON") and errors[3]["text"] == "{not json"
    assert errors[4]["error"] == "missing field 'response'"
    assert errors[5]["error"] == "field 'response' must be a string, got null"
    assert "must be an object or a list" in errors[6]["error"]
    assert "['BB']" in errors[7]["error"]
    assert "'gold' is 'Z'" in errors[8]["error"]
    assert "not a JSON object" in errors[10]["error"]

    assert "10 lines: 3 parsed, 7 malformed" in proc.stdout
    assert "invalid rate 33.3%" in proc.stdout
    assert "| final_answer | 1 | 100.0% |" in proc.stdout
    assert "| option_text | 1 | 0.0% |" in proc.stdout


def test_extract_audits_the_parser_on_a_whole_corpus(tmp_path):
    target = tmp_path / "corpus.jsonl"
    proc = ubench("extract", "--input", str(CORPUS), "--output", str(target))
    source, out = read_jsonl(CORPUS), read_jsonl(target)
    assert len(out) == len(source)
    for before, after in zip(source, out):
        assert {k: after[k] for k in before} == before
        assert (after["extracted"] is None) == after["rule"].startswith("invalid:"), after
    # Checked against the corpus's own labels, not against the parser.
    agree = sum(after["extracted"] == before["label"] for before, after in zip(source, out))
    assert agree == len(source)  # the parser's own floor: every corpus style read right
    assert f"{len(source)} lines: {len(source)} parsed, 0 malformed" in proc.stdout


def test_extract_rescores_a_run_folder(tmp_path):
    run = tmp_path / "run"
    ubench("run", "--model", "random", "--limit", "12", "--output", str(run), "--no-progress")
    target = tmp_path / "rescored.jsonl"
    proc = ubench("extract", "--input", str(run / "samples.jsonl"), "--output", str(target))
    records, out = read_jsonl(run / "samples.jsonl"), read_jsonl(target)
    assert [o["extracted"] for o in out] == [r["extracted"] for r in records]
    assert [o["correct"] for o in out] == [r["correct"] for r in records]
    assert "agreement with 'gold' over 12 lines" in proc.stdout


def test_extract_fails_only_when_the_input_cannot_be_read(tmp_path):
    proc = ubench("extract", "--input", str(tmp_path / "missing.jsonl"), "--output",
                  str(tmp_path / "out.jsonl"), check=False)
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr and "missing.jsonl" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()
