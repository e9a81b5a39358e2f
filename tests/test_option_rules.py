"""An option the rest of the command line makes meaningless is refused (exit 2, one line naming
both flags, nothing written), and the combinations that mean something still run."""
from __future__ import annotations

import json

import pytest

from tests.conftest import ubench

URL = "http://127.0.0.1:9/v1"

IGNORED = [  # (the command line after `ubench run --output DIR`, the two flags the line names)
    (["--model", "random", "--judge-base-url", URL], ("--judge-base-url", "--judge")),
    (["--model", "openai/gpt-4o", "--judge", "random", "--export-batch"],
     ("--judge", "--export-batch")),
    (["--model", "openai/gpt-4o", "--judge", "random", "--batch"], ("--judge", "--batch")),
    (["--model", "openai/gpt-4o", "--judge", "random", "--batch", "--batch-online-fallback"],
     ("--judge", "--batch")),
    (["--model", "vllm/m", "--vllm-args", "--max-model-len 4096"], ("--vllm-args", "--serve")),
    (["--model", "vllm/m", "--vllm-python", "/usr/bin/python3"], ("--vllm-python", "--serve")),
    (["--model", "vllm/m", "--serve-timeout", "60"], ("--serve-timeout", "--serve")),
    (["--model", "vllm/m", "--batch-poll", "5"], ("--batch-poll", "--batch")),
    (["--model", "vllm/m", "--export-batch", "--batch-poll", "5"],
     ("--batch-poll", "--export-batch")),
    (["--model", "vllm/m", "--batch-online-fallback"], ("--batch-online-fallback", "--batch")),
    (["--model", "vllm/m", "--export-batch", "--batch-online-fallback"],
     ("--batch-online-fallback", "--export-batch")),
    (["--model", "vllm/m", "--batch-max-requests", "10"], ("--batch-max-requests", "--batch")),
    (["--model", "vllm/m", "--batch-size", "4"], ("--batch-size", "--model vllm/m")),
    (["--model", "openai/gpt-4o", "--api-version", "2024-10-21"],
     ("--api-version", "--model openai/gpt-4o")),
    (["--model", "random", "--revision", "abc123"], ("--revision", "--dataset sample")),
    (["--model", "random", "--base-url", URL], ("--base-url", "--model random")),
    (["--model", "transformers/x", "--api-key-env", "KEY"], ("--api-key-env", "--model transformers/x")),
    (["--model", "random", "--image-detail", "low"], ("--image-detail", "--model random")),
    (["--model", "random", "--extra-body", "{}"], ("--extra-body", "--model random")),
    (["--model", "random", "--max-response-bytes", "4096"],
     ("--max-response-bytes", "--model random")),
    (["--model", "random", "--timeout", "5"], ("--timeout", "--model random")),
    (["--model", "vllm/m", "--export-batch", "--base-url", URL], ("--base-url", "--export-batch")),
    (["--model", "openai/gpt-4o", "--export-batch", "--api-key-env", "KEY"],
     ("--api-key-env", "--export-batch")),
    (["--model", "vllm/m", "--export-batch", "--timeout", "5"], ("--timeout", "--export-batch")),
    (["--model", "vllm/m", "--export-batch", "--max-attempts", "2"],
     ("--max-attempts", "--export-batch")),
    (["--model", "random", "--reasoning-effort", "low"], ("--reasoning-effort", "--model random")),
    (["--model", "openai/gpt-4o", "--reasoning-effort", "low"],
     ("--reasoning-effort", "--model openai/gpt-4o")),
    (["--model", "openai/o3", "--temperature", "0.7"], ("--temperature", "--model openai/o3")),
    (["--model", "openai/gpt-5-mini", "--top-p", "0.9"], ("--top-p", "--model openai/gpt-5-mini")),
    (["--model", "vllm/m", "--export-batch", "--max-rpm", "60"], ("--max-rpm", "--export-batch")),
    (["--model", "openai/gpt-4o", "--batch", "--max-tpm", "1000"], ("--max-tpm", "--batch")),
    (["--model", "openai/gpt-4o", "--batch", "--adaptive-concurrency"],
     ("--adaptive-concurrency", "--batch")),
    (["--model", "vllm/m", "--export-batch", "--max-cost", "5"], ("--max-cost", "--export-batch")),
    (["--model", "random", "--top-logprobs", "5"], ("--top-logprobs", "--answer-mode logprobs")),
]


@pytest.mark.parametrize("args, flags", IGNORED, ids=[" ".join(a[2:]) for a, _ in IGNORED])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_an_option_that_would_be_ignored_is_refused(tmp_path, args, flags, dry_run):
    out = tmp_path / "out"
    proc = ubench("run", "--output", str(out), "--no-progress", *args,
                  *(["--dry-run"] if dry_run else []), check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(flag in lines[0] for flag in flags), lines[0]
    assert not out.exists()  # refused before anything was written (or sent)


MEANINGFUL = [  # each option with what gives it its meaning: accepted (here by a dry run)
    ["--model", "random", "--judge", "random", "--judge-base-url", URL],
    ["--model", "vllm/m", "--serve", "--vllm-args", "--max-model-len 4096", "--serve-timeout", "5"],
    ["--model", "vllm/m", "--export-batch", "--batch-max-requests", "10"],
    ["--model", "openai/gpt-4o", "--batch", "--batch-poll", "1", "--batch-online-fallback",
     "--max-rpm", "60"],
    ["--model", "transformers/x", "--batch-size", "4"],
    ["--model", "azure/my-deployment", "--api-version", "2024-10-21", "--reasoning-effort", "low"],
    ["--model", "openai/o3", "--reasoning-effort", "high", "--max-tokens", "64"],
    ["--model", "openai/gpt-4o", "--temperature", "0.7", "--top-p", "0.9", "--timeout", "5"],
    ["--model", "vllm/m", "--base-url", URL, "--image-detail", "low", "--extra-body", "{}",
     "--reasoning-effort", "low", "--api-key-env", "KEY", "--max-response-bytes", "4096"],
    ["--model", "random", "--timeout", "5", "--judge", "random"],
]


@pytest.mark.parametrize("args", MEANINGFUL, ids=[" ".join(a[1:]) for a in MEANINGFUL])
def test_combinations_that_mean_something_are_accepted(tmp_path, args):
    out = tmp_path / "out"
    proc = ubench("run", "--output", str(out), "--dry-run", "--limit", "2", *args)
    assert json.loads((out / "estimate.json").read_text())["requests"] == 2, proc.stdout


def test_extract_refuses_a_judge_server_without_a_judge(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"response": "B", "options": ["x", "y"]}) + "\n")
    proc = ubench("extract", "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
                  "--judge-base-url", URL, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--judge-base-url" in proc.stderr and "--judge" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()
    bad = ubench("extract", "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
                 "--judge", "random", "--judge-base-url", "not a url", check=False)
    assert bad.returncode == 2 and "not an http(s) URL" in bad.stderr


def test_a_forced_dry_run_counts_what_a_forced_run_would_send(tmp_path):
    out = tmp_path / "run"
    ubench("run", "--model", "random", "--output", str(out), "--limit", "4", "--no-progress")
    ubench("run", "--model", "random", "--output", str(out), "--limit", "4", "--dry-run")
    assert json.loads((out / "estimate.json").read_text())["requests"] == 0  # all answered
    ubench("run", "--model", "random", "--output", str(out), "--limit", "4", "--dry-run",
           "--force")
    assert json.loads((out / "estimate.json").read_text())["requests"] == 4  # all sent again
