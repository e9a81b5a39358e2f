"""`ubench study`: the study file, the grid of run folders, resume after kill -9, and the study's
statistics (leaderboard, spread, Kendall's τ, Holm across the study) against hand computation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.report import results
from harness.report.schema import SampleRecord
from harness.report.study import write_study
from harness.score.scoring import summarize
from harness.score.stats import kendall_tau, spread_bootstrap
from harness.servers.testserver import TestServer
from tests.conftest import ROOT, read_jsonl, ubench
from tests.test_robustness import _wait_for_lines

TEMPLATES = ["official", "expert-microscopist", "official-paraphrase-2", "few-shot-3"]


def study_file(folder: Path, url_a: str, url_b: str, *, limit: int = 40, extra: str = "") -> Path:
    path = folder / "study.yaml"
    path.write_text(f"""name: two-models
dataset: sample
limit: {limit}
models:
  - model: openai/vlm-mixed
    label: vlm-mixed
    base_url: {url_a}
    concurrency: 2
  - model: openai/vlm-first
    label: vlm-first
    base_url: {url_b}
    concurrency: 2
templates: [{', '.join(TEMPLATES)}]
answer_modes: [free]
option_orders: [stored]
seeds: [0]
{extra}""")
    return path


def cell_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "runs").rglob("samples.jsonl"))


def test_a_study_of_two_models_and_four_templates_resumes_after_kill_9(tmp_path):
    # Two servers (one per model, different answer rules) run at the same time; the study is
    # killed mid-way, re-run with the same command, and nothing recorded is asked again.
    out = tmp_path / "study"
    with TestServer("mixed", latency_s=0.03) as a, TestServer("first", latency_s=0.03) as b:
        path = study_file(tmp_path, a.base_url, b.base_url)
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "study", str(path),
                                 "--output", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        cell_b = out / "runs" / "vlm-first" / "free-stored-seed0" / "official" / "samples.jsonl"
        _wait_for_lines(cell_b, 10, proc)
        assert 0 < a.stats.requests < 4 * 40  # the other server's cells run at the same time
        proc.kill()
        proc.wait()
        recorded = {str(f): {r["item_id"] for r in read_jsonl(f / "samples.jsonl")}
                    for f in cell_folders(out)}
        asked = a.stats.requests + b.stats.requests
        assert sum(map(len, recorded.values())) < 2 * 4 * 40
        dry = ubench("study", str(path), "--output", str(out), "--dry-run")
        to_send = int(dry.stdout.strip().splitlines()[-1].split("; ")[1].split()[0])
        ubench("study", str(path), "--output", str(out))
        resent = a.stats.requests + b.stats.requests - asked
    # kill -9 loses at most the requests in flight (2 per server); nothing recorded is re-asked
    assert resent == to_send
    assert max(a.stats.by_key.values()) <= 2 and max(b.stats.by_key.values()) <= 2
    folders = cell_folders(out)
    assert len(folders) == 8
    for folder in folders:
        records = read_jsonl(folder / "samples.jsonl")
        assert len(records) == 40 and not any(r["error"] for r in records)
        assert set(recorded.get(str(folder), set())) <= {r["item_id"] for r in records}
        assert json.loads((folder / "manifest.json").read_text())["model"]["spec"] in (
            "openai/vlm-mixed", "openai/vlm-first")
    # the leaderboard holds exactly each cell's own summary
    study = json.loads((out / "study.json").read_text())
    assert len(study["leaderboard"]) == 8
    for row in study["leaderboard"]:
        summary = json.loads((Path(row["folder"]) / "summary.json").read_text())
        for key in ("official/coarse", "official/fine", "robust/coarse", "robust/fine"):
            scorer, group = key.split("/")
            for field in ("n", "accuracy", "cluster_ci_low", "cluster_ci_high"):
                assert row[key][field] == summary["scorers"][scorer][group][field]
        assert row["metric"] == summary["scorers"]["robust"]["coarse"]["accuracy"]
    few_shot = read_jsonl(out / "runs" / "vlm-first" / "free-stored-seed0" / "few-shot-3"
                          / "samples.jsonl")
    assert all(len(r["examples"]) == 3 for r in few_shot)
    md = (out / "study.md").read_text()
    assert "Leaderboard" in md and "Rank stability" in md and "heatmap.png" in md
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table" in (out / "study.html").read_text()


def _hand_made_run(folder: Path, model: str, template: str, accuracy: float) -> None:
    """A run folder of 10 coarse questions, one per image, the first 10·accuracy right."""
    folder.mkdir(parents=True)
    right = round(10 * accuracy)
    records = [SampleRecord(item_id=f"img{i}:domain", image_id=f"img{i}",
                            dataset="kather_et_al_2016", question_type="domain",
                            options={"A": "x", "B": "y"}, gold="A",
                            extracted="A" if i < right else "B", rule="lone_letter",
                            correct=i < right, correct_official=i < right) for i in range(10)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n"
                                                  for r in records))
    (folder / "manifest.json").write_text(json.dumps({
        "model": {"spec": model}, "template": {"name": template}, "seed": 0,
        "dataset": {"revision": "hand"}, "options_order": None}))
    summary = summarize(records)
    (folder / "summary.json").write_text(json.dumps(summary))


ACCURACY = {  # template → accuracy of m1, m2, m3
    "t1": [0.8, 0.5, 0.2],  # m1 > m2 > m3
    "t2": [0.6, 0.7, 0.1],  # m2 > m1 > m3
    "t3": [0.3, 0.4, 0.9],  # m3 > m2 > m1
}


def _hand_made_cells(tmp_path: Path) -> list[dict]:
    cells = []
    for template, accuracies in ACCURACY.items():
        for model, acc in zip(["m1", "m2", "m3"], accuracies):
            folder = tmp_path / "runs" / model / "cond" / template
            _hand_made_run(folder, model, template, acc)
            cells.append({"model": model, "template": template, "answer_mode": "free",
                          "option_order": "stored", "seed": 0, "folder": str(folder)})
    return cells


def test_tau_spread_and_top_changes_match_hand_computation(tmp_path):
    cells = _hand_made_cells(tmp_path)
    result = write_study("hand", cells, {"scorer": "robust", "group": "coarse"}, tmp_path)
    (stability,) = result["rank_stability"]
    taus = {tuple(p["templates"]): p["tau"] for p in stability["pairs"]}
    # t1 vs t2: (m1,m2) discordant, (m1,m3) and (m2,m3) concordant → (2 − 1)/3
    assert taus[("t1", "t2")] == pytest.approx(1 / 3)
    assert taus[("t1", "t3")] == pytest.approx(-1.0)  # t3 reverses t1
    assert taus[("t2", "t3")] == pytest.approx(-1 / 3)
    assert stability["mean_tau"] == pytest.approx((1 / 3 - 1 - 1 / 3) / 3)
    assert stability["top_model"] == {"t1": ["m1"], "t2": ["m2"], "t3": ["m3"]}
    assert stability["top_changes"] == 2 and stability["templates_compared"] == 2
    spreads = {s["model"]: s for s in result["sensitivity"]}
    for model, expected in (("m1", 0.8 - 0.3), ("m2", 0.7 - 0.4), ("m3", 0.9 - 0.1)):
        s = spreads[model]
        assert s["spread"] == pytest.approx(expected) and s["n"] == 10
        assert 0 <= s["ci_low"] <= s["ci_high"] <= 1
    assert spreads["m3"]["best_template"] == "t3" and spreads["m3"]["worst_template"] == "t2"
    assert spreads["m3"]["p_no_template_effect"] < 0.01  # 9 of 10 against 1 of 10: real

    # the leaderboard is the runs' summaries; every interval outside the paper's stays in [0, 1]
    for row in result["leaderboard"]:
        acc = ACCURACY[row["template"]][int(row["model"][1]) - 1]
        assert row["robust/coarse"]["accuracy"] == pytest.approx(acc)
        assert 0 <= row["robust/coarse"]["cluster_ci_low"] <= acc
        assert acc <= row["robust/coarse"]["cluster_ci_high"] <= 1
    # Holm over the whole study: 3 models × 2 template comparisons + 3 templates × 2 model
    # comparisons, on the one group these runs have (coarse)
    tests = result["comparisons"]["tests"]
    assert len(tests) == 12
    p = np.array([t["p"] for t in tests])
    order = np.argsort(p)
    expected = np.minimum(1, np.maximum.accumulate((12 - np.arange(12)) * p[order]))
    assert [tests[i]["p_holm_study"] for i in order] == pytest.approx(expected.tolist())
    for t in tests:
        assert -1 <= t["ci_low"] <= t["difference"] <= t["ci_high"] <= 1


def test_a_study_reads_each_cell_once_and_its_paired_tests_are_compares(tmp_path, monkeypatch):
    cells = _hand_made_cells(tmp_path)
    parsed = []
    loads = results.orjson.loads
    monkeypatch.setattr(results.orjson, "loads", lambda line: parsed.append(line) or loads(line))
    result = write_study("hand", cells, {"scorer": "robust", "group": "coarse"}, tmp_path)
    assert len(parsed) == 9 * 10  # 9 cells of 10 records: each line parsed once
    assert [c["done"] for c in cells] == [10] * 9
    monkeypatch.undo()
    # the study's differences between m1's templates are `ubench compare`'s, to the last digit
    folders = [c["folder"] for c in cells if c["model"] == "m1"]
    ubench("compare", *folders, "--output", str(tmp_path / "cmp"))
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    (coarse,) = [row for row in compared["groups"] if row["group"] == "coarse"]
    study = [t for t in result["comparisons"]["tests"] if t["family"] == "templates of m1"]
    keys = ("difference", "ci_low", "ci_high", "p")
    assert [[t[k] for k in keys] for t in study] == \
        [[d[k] for k in keys] for d in coarse["differences"]]
    assert [t["other"] for t in study] == ["m1/t2", "m1/t3"]


def test_kendall_tau_b_with_ties():
    # pairs (0,1), (0,2) concordant; (1,2) tied in x: τ-b = 2 / √((3 − 1)(3 − 0))
    assert kendall_tau([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert kendall_tau([1, 1], [1, 2]) is None
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == pytest.approx(-1)


@pytest.mark.parametrize("old, new, line, message", [
    ("", "", None, None),  # the file as written is valid
    ("concurrency: 2", "concurrency: 0", 8, "models/0/concurrency"),
    ("[free]", "[free, letter-probabilities]", 14, "answer_modes/1"),
    ("[stored]", "[sorted]", 15, "option_orders/0"),
    ("[official,", "[official, no-such-template,", 13, "templates/1"),
    ("label: vlm-first", "label: vlm-mixed", 10, "models/1/label"),
    ("limit: 40", "limit: forty", 3, "limit"),
    ("127.0.0.1:9/v1", "127.0.0.1:99999/v1", 7, "models/0/base_url: 'http://127.0.0.1:99999/v1'"
     ": Port out of range"),
    ("base_url: http://127.0.0.1:9/v1", "base_url: [http://127.0.0.1:9/v1, 'ftp://host/v1']", 7,
     "models/0/base_url/1: 'ftp://host/v1' is not an http(s) URL"),
    ("seeds: [0]", "seeds: [0]\ngeneration:\n  temperature: 0\n  top_p: 1.5", 19,
     "generation/top_p: 1.5 is not in (0, 1]"),
])
def test_study_file_errors_name_the_line_and_field(tmp_path, old, new, line, message):
    path = study_file(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    path.write_text(path.read_text().replace(old, new, 1))
    proc = ubench("study", str(path), "--output", str(tmp_path / "out"), "--dry-run", check=False)
    if message is None:
        assert proc.returncode == 0 and "8 cells; 320 requests to send." in proc.stdout
        return
    assert proc.returncode != 0
    assert f"{path}:{line}: field {message}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("field, value, option", [
    ("base_url", "http://host:99999/v1", "--base-url"),
    ("base_url", "localhost:8000/v1", "--base-url"),
    ("top_p", "0", "--top-p"),
    ("top_p", "1.01", "--top-p"),
])
def test_a_study_refuses_a_setting_in_the_words_ubench_run_uses(tmp_path, field, value, option):
    # One check for both: the study file's line names the field, the reason is run's own.
    setting = (f"    base_url: {value}\n" if field == "base_url" else "")
    path = tmp_path / "study.yaml"
    path.write_text(f"name: checked\nmodels:\n  - model: vllm/m\n{setting}templates: [official]\n"
                    + (f"generation:\n  top_p: {value}\n" if field == "top_p" else ""))
    study = ubench("study", str(path), "--output", str(tmp_path / "out"), check=False)
    run = ubench("run", "--model", "vllm/m", option, value, "--output", str(tmp_path / "run"),
                 "--dry-run", check=False)
    assert study.returncode == run.returncode == 2, (study.stderr, run.stderr)
    reason = run.stderr.strip().splitlines()[-1].split(f"'{option}': ", 1)[1]
    line = 4 if field == "base_url" else 6
    field_path = "models/0/base_url" if field == "base_url" else "generation/top_p"
    assert study.stderr.strip() == f"Error: {path}:{line}: field {field_path}: {reason}"
    assert not (tmp_path / "out" / "runs").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, setting, generation, line, field_path, run_args", [
    ("random", "    base_url: http://127.0.0.1:9/v1\n", "", 4, "models/0/base_url",
     ["--base-url", "http://127.0.0.1:9/v1"]),
    ("random", "    api_key_env: KEY\n", "", 4, "models/0/api_key_env",
     ["--api-key-env", "KEY"]),
    ("vllm/m", "    vllm_args: --max-model-len 4096\n", "", 4, "models/0/vllm_args",
     ["--vllm-args", "--max-model-len 4096"]),
    ("openai/o3", "", "generation:\n  temperature: 0.7\n", 6, "generation/temperature",
     ["--temperature", "0.7"]),
])
def test_a_study_refuses_a_setting_its_cells_would_ignore_as_run_does(
        tmp_path, model, setting, generation, line, field_path, run_args):
    path = tmp_path / "study.yaml"
    path.write_text(f"name: ignored\nmodels:\n  - model: {model}\n{setting}"
                    f"templates: [official]\n{generation}")
    study = ubench("study", str(path), "--output", str(tmp_path / "out"), "--dry-run",
                   check=False)
    run = ubench("run", "--model", model, *run_args, "--output", str(tmp_path / "run"),
                 "--dry-run", check=False)
    assert study.returncode == run.returncode == 2, (study.stderr, run.stderr)
    reason = run.stderr.strip().removeprefix("Error: ")
    assert study.stderr.strip() == (f"Error: {path}:{line}: field {field_path}: {reason} "
                                    "(as `ubench run` refuses it)")


def test_the_spread_permutation_test_sees_no_effect_where_templates_do_not_matter():
    # Four templates answering by coin flips: the spread is positive (and its CI excludes 0,
    # since max − min of noisy accuracies is biased upwards), but the permutation test is not
    # fooled; a template that is truly better is found.
    rng = np.random.default_rng(4)
    images = np.repeat(np.arange(60), 2)
    noise = (rng.random((4, 120)) < 0.5).astype(float)
    result = spread_bootstrap(noise, images, seed=1)
    assert result["spread"] > 0 and result["p_no_template_effect"] > 0.05
    better = noise.copy()
    better[0] = rng.random(120) < 0.85
    assert spread_bootstrap(better, images, seed=1)["p_no_template_effect"] < 0.01


@pytest.mark.parametrize("text, expected", [
    ("", ":1: field (top level)"),
    ("- just\n- a list\n", ":1: field (top level)"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_a_study_file_that_is_not_a_study_is_one_clear_line(tmp_path, text, expected):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    proc = ubench("study", str(path), "--dry-run", check=False)
    assert proc.returncode != 0 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_the_demo_study_file_runs_two_model_names_on_one_server(tmp_path):
    # docs/demo-study.yaml as shipped: one loopback server answers under two model names with
    # different rules (`first` always names option A; `mixed` varies letters and formats).
    out = tmp_path / "demo-study"
    with TestServer("random", model_styles={"vlm-mixed": "mixed", "vlm-first": "first"}) as s:
        ubench("study", str(ROOT / "docs" / "demo-study.yaml"), "--output", str(out),
               env={"UBENCH_DEMO_URL": s.base_url})
    folders = cell_folders(out)
    assert len(folders) == 8
    leaderboard = json.loads((out / "study.json").read_text())["leaderboard"]
    assert {(row["model"], row["template"]) for row in leaderboard} == {
        (m, t) for m in ("vlm-mixed", "vlm-first") for t in TEMPLATES}
    for folder in folders:
        records = read_jsonl(folder / "samples.jsonl")
        letters = {r["extracted"] for r in records}
        if "vlm-first" in folder.parts:
            assert letters == {"A"} and all(r["correct"] == (r["gold"] == "A") for r in records)
        else:
            assert len(letters - {None}) > 2  # the other name is answered by the other rule
        row = next(r for r in leaderboard
                   if folder.parts[-3:] == (r["model"], "free-stored-seed0", r["template"]))
        summary = json.loads((folder / "summary.json").read_text())
        assert row["robust/coarse"]["accuracy"] == summary["scorers"]["robust"]["coarse"]["accuracy"]


def test_a_study_exits_as_a_run_does(tmp_path):
    # One model on a server that fails requests: 3 when no item is answered, 1 when some are
    # errors, 2 for a bad study file (nothing sent); 0 is the other tests' default check.
    def one_model(url: str, name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\ndataset: sample\nlimit: 6\n"
                        f"models:\n  - model: openai/vlm\n    base_url: {url}\n"
                        "templates: [official]\ngeneration:\n  max_attempts: 1\n")
        return path

    with TestServer("random", fault_rate=1.0, faults=("500",)) as server:
        none = ubench("study", str(one_model(server.base_url, "none")), "--output",
                      str(tmp_path / "none"), check=False)
        server.behaviour.fault_rate = 0.5
        some = ubench("study", str(one_model(server.base_url, "some")), "--output",
                      str(tmp_path / "some"), check=False)
        sent = server.stats.requests
        bad = one_model(server.base_url, "bad")
        bad.write_text(bad.read_text().replace("templates:", "templatez:"))
        usage = ubench("study", str(bad), "--output", str(tmp_path / "bad"), check=False)
        assert server.stats.requests == sent
    assert (none.returncode, some.returncode, usage.returncode) == (3, 1, 2), (
        none.stderr, some.stderr, usage.stderr)
    for proc in (none, some, usage):
        assert "Traceback" not in proc.stderr
    records = read_jsonl(tmp_path / "some" / "runs" / "openai_vlm" / "free-stored-seed0"
                         / "official" / "samples.jsonl")
    assert 0 < sum(bool(r["error"]) for r in records) < len(records) == 6
    assert (tmp_path / "some" / "study.md").exists()


def test_a_study_refuses_what_ubench_run_refuses_and_two_templates_of_one_name(tmp_path):
    # An answer mode the model cannot answer in is refused before anything runs, as `ubench run`
    # refuses it; two templates whose own names agree would write into one cell folder.
    (tmp_path / "copy.yaml").write_text((ROOT / "prompts" / "official.yaml").read_text())
    for templates, modes, message in (("[official]", "[logprobs]", "lacks"),
                                      ("[official, copy.yaml]", "[free]", "appears twice")):
        path = tmp_path / "study.yaml"
        path.write_text(f"name: refused\ndataset: sample\nlimit: 3\nmodels:\n  - model: random\n"
                        f"templates: {templates}\nanswer_modes: {modes}\n")
        proc = ubench("study", str(path), "--output", str(tmp_path / "out"), check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not list((tmp_path / "out").rglob("samples.jsonl"))


def test_run_dry_run_into_an_unwritable_folder_is_one_line(tmp_path):
    proc = ubench("run", "--model", "random", "--dry-run", "--output", "/proc/ubench-nope",
                  check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "/proc/ubench-nope" in proc.stderr


def _one_cell_study(tmp_path: Path, url: str, limit: int = 30) -> Path:
    path = tmp_path / "cells.yaml"
    path.write_text(f"name: cells\ndataset: sample\nlimit: {limit}\nmodels:\n  - model: openai/vlm\n"
                    f"    label: vlm\n    base_url: {url}\n    concurrency: 1\n"
                    "templates: [official, expert-microscopist]\n")
    return path


def test_a_cell_is_written_by_one_process_while_its_study_runs(tmp_path):
    # The study holds every cell's lock for its life: a second study and a `ubench run` into one
    # of its cells are refused (exit 2, naming the study's PID), and each cell holds each item once.
    out = tmp_path / "study"
    cell = out / "runs" / "vlm" / "free-stored-seed0" / "expert-microscopist"
    with TestServer("random", latency_s=0.05) as server:
        path = _one_cell_study(tmp_path, server.base_url)
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "study", str(path),
                                 "--output", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_lines(out / "runs" / "vlm" / "free-stored-seed0" / "official"
                            / "samples.jsonl", 2, proc)
            run = ubench("run", "--model", "openai/vlm", "--base-url", server.base_url,
                         "--output", str(cell), "--prompt", "expert-microscopist", "--limit",
                         "30", "--no-progress", check=False)
            again = ubench("study", str(path), "--output", str(out), check=False)
        finally:
            stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    for refused, folder in ((run, cell), (again, out)):
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
        assert f"{folder} is in use by another ubench process (PID {proc.pid})" in refused.stderr
    for template in ("official", "expert-microscopist"):
        records = read_jsonl(out / "runs" / "vlm" / "free-stored-seed0" / template
                             / "samples.jsonl")
        assert len(records) == len({r["item_id"] for r in records}) == 30
    assert server.stats.requests == 60 and max(server.stats.by_key.values()) == 1
    done = ubench("study", str(path), "--output", str(out), "--dry-run")
    forced = ubench("study", str(path), "--output", str(out), "--dry-run", "--force")
    assert done.stdout.strip().endswith("2 cells; 0 requests to send.")
    assert forced.stdout.strip().endswith("2 cells; 60 requests to send.")  # all over again


def test_a_study_is_refused_while_a_run_writes_one_of_its_cells(tmp_path):
    out = tmp_path / "study"
    cell = out / "runs" / "vlm" / "free-stored-seed0" / "official"
    with TestServer("random", latency_s=0.05) as run_server, TestServer("random") as study_server:
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--model",
                                 "openai/vlm", "--base-url", run_server.base_url, "--output",
                                 str(cell), "--limit", "30", "--concurrency", "1",
                                 "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_lines(cell / "samples.jsonl", 2, proc)
            study = ubench("study", str(_one_cell_study(tmp_path, study_server.base_url)),
                           "--output", str(out), check=False)
        finally:
            proc.communicate(timeout=120)
        assert study_server.stats.requests == 0  # refused before anything was sent
    assert proc.returncode == 0
    assert study.returncode == 2 and len(study.stderr.strip().splitlines()) == 1
    assert f"{cell} is in use by another ubench process (PID {proc.pid})" in study.stderr
    assert not (out / "runs" / "vlm" / "free-stored-seed0" / "expert-microscopist"
                / "samples.jsonl").exists()
    assert len(read_jsonl(cell / "samples.jsonl")) == 30
