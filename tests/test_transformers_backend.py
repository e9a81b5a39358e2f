"""The in-process transformers backend, driven through the CLI on a tiny random Idefics3 folder."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.conftest import need

need("torch", reason="the transformers backend needs the 'local' extra (pip install -e '.[local]')")
need("transformers", reason="the transformers backend needs the 'local' extra")

from harness.adapters import AdapterError, ChatRequest, GenerationParams, create_adapter  # noqa: E402
from harness.adapters.answer_modes import token_letter  # noqa: E402
from harness.data.images import encode_image  # noqa: E402
from harness.data.items import iter_examples  # noqa: E402
from harness.data.sources import iter_rows, resolve_source  # noqa: E402
from tests.conftest import read_jsonl, ubench  # noqa: E402
from tests.tiny_vlm import build_tiny_idefics3, make_tokenizer, steer_to  # noqa: E402

SAMPLE_ITEMS = 136


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_idefics3(tmp_path_factory.mktemp("models") / "tiny-idefics3")


@pytest.fixture(scope="module")
def steered_model(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-idefics3-says-B"
    shutil.copytree(tiny_model, folder)
    steer_to(folder, "B")
    return folder


def _run(model, out, *extra):
    return ubench("run", "--model", f"transformers/{model}", "--dataset", "sample",
                  "--output", str(out), "--max-tokens", "8", "--no-progress", *extra)


def test_run_writes_a_complete_run_folder(tiny_model, tmp_path):
    out = tmp_path / "run"
    _run(tiny_model, out, "--batch-size", "8")
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == SAMPLE_ITEMS
    assert len({r["item_id"] for r in records}) == SAMPLE_ITEMS
    for r in records:
        assert r["error"] is None, r["error"]
        assert isinstance(r["response"], str)
        assert r["finish_reason"] in ("stop", "length")
        # The image is in the prompt: its 4 image tokens plus wrappers, then the question text.
        assert r["usage"]["prompt_tokens"] > len(r["prompt"][0]["content"][1]["text"].encode())
        assert 1 <= r["usage"]["completion_tokens"] <= 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["model_class"] == "Idefics3ForConditionalGeneration"
    assert manifest["model"]["processor_class"] == "Idefics3Processor"
    assert manifest["model"]["device"] == "cpu"
    assert manifest["runtime"]["batch_size"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_records"] == SAMPLE_ITEMS and summary["n_errors"] == 0
    assert (out / "summary.md").read_text().startswith("# uBench results: transformers/")


def test_left_padded_batches_answer_like_single_requests(tiny_model, tmp_path):
    """Greedy answers must not depend on which requests share a padded batch."""
    _run(tiny_model, tmp_path / "one", "--batch-size", "1", "--limit", "40")
    _run(tiny_model, tmp_path / "eight", "--batch-size", "8", "--limit", "40")
    one = {r["item_id"]: r for r in read_jsonl(tmp_path / "one" / "samples.jsonl")}
    eight = {r["item_id"]: r for r in read_jsonl(tmp_path / "eight" / "samples.jsonl")}
    assert len(one) == len(eight) == 40
    for item_id, record in one.items():
        assert eight[item_id]["response"] == record["response"], item_id
        assert eight[item_id]["usage"] == record["usage"], item_id


def test_steered_model_scores_the_expected_accuracy(steered_model, tmp_path):
    """The model answers B through the real generate path: accuracy = share of items with gold B."""
    out = tmp_path / "run"
    _run(steered_model, out)
    records = read_jsonl(out / "samples.jsonl")
    assert [r["response"] for r in records] == ["B"] * SAMPLE_ITEMS
    assert {r["finish_reason"] for r in records} == {"stop"}

    golds: dict[str, list[str]] = {}
    for example in iter_examples(iter_rows(resolve_source("sample", None))):
        for item in example.items:
            golds.setdefault(item.question_type, []).append(item.gold_letter)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rules"]["lone_letter"]["n"] == SAMPLE_ITEMS
    for qtype, letters in golds.items():
        expected = letters.count("B") / len(letters)
        for scorer in ("official", "robust"):
            reported = summary["scorers"][scorer][f"question_type/{qtype}"]
            assert reported["n"] == len(letters)
            assert reported["accuracy"] == pytest.approx(expected), (scorer, qtype)


def test_requests_are_batched_and_a_bad_image_fails_alone(tiny_model):
    adapter = create_adapter(f"transformers/{tiny_model}", batch_size=4)
    image = encode_image(_png_bytes())
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "Which? A) x B) y"}]}]
    params = GenerationParams(max_tokens=4)

    async def ask_all():
        requests = [ChatRequest(f"item-{i}", messages, image.data_url, params, "AB")
                    for i in range(9)]
        requests[5].image_data_url = "data:image/png;base64,bm90IGFuIGltYWdl"  # "not an image"
        try:
            return await asyncio.gather(*(adapter.complete(r) for r in requests),
                                        return_exceptions=True)
        finally:
            await adapter.aclose()

    results = asyncio.run(ask_all())
    failed = results.pop(5)
    assert isinstance(failed, AdapterError) and not failed.retryable
    assert "item-5" in failed.message and "image" in failed.message
    assert all(not isinstance(r, Exception) for r in results)
    # All nine arrive together: batches of 4, 4 (one dropped for its image, so 3 generated), 1.
    assert [r.meta["batch_size"] for r in results] == [4, 4, 4, 4, 3, 3, 3, 1]
    assert len({r.text for r in results}) == 1  # same prompt and image: same greedy answer


def test_a_processor_without_images_is_refused(tmp_path):
    """AutoProcessor returns a bare tokenizer for a text-only model: that run must not start."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "text-only"
    tokenizer = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    proc = ubench("run", "--model", f"transformers/{folder}", "--dataset", "sample",
                  "--output", str(tmp_path / "run"), "--no-progress", check=False)
    assert proc.returncode != 0
    assert "has no image processor" in proc.stderr and "images would be ignored" in proc.stderr
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


# --- answer modes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def merged_letters_model(tmp_path_factory):
    """A tiny model whose tokenizer spells each letter three ways (`A`, ` A`, `(A`), as real
    tokenizers do, so a letter's probability is a sum over tokens."""
    return build_tiny_idefics3(tmp_path_factory.mktemp("models") / "tiny-merged",
                               letter_merges="ABCDEFGH", init_std=0.5)


def test_letter_tokens_are_the_spellings_the_tokenizer_produces(merged_letters_model):
    adapter = create_adapter(f"transformers/{merged_letters_model}")
    tokenizer = adapter.processor.tokenizer
    found = adapter.letter_token_ids("ABC")
    assert {k: sorted(tokenizer.decode([i]) for i in ids) for k, ids in found.items()} == \
        {"A": [" A", "(A", "A"], "B": [" B", "(B", "B"], "C": [" C", "(C", "C"]}
    # What the tokenizer produces for an answer after the assistant prefix is among them.
    answer = tokenizer.encode("Assistant: B", add_special_tokens=False)[-1]
    assert answer in found["B"]


def test_logprobs_argmax_equals_greedy_choice_under_the_letter_mask(merged_letters_model,
                                                                    tmp_path):
    """One forward pass (logprobs) and masked greedy generation (choice) pick the same letter."""
    _run(merged_letters_model, tmp_path / "probs", "--answer-mode", "logprobs", "--batch-size", "8")
    _run(merged_letters_model, tmp_path / "choice", "--answer-mode", "choice", "--batch-size", "4")
    probs = {r["item_id"]: r for r in read_jsonl(tmp_path / "probs" / "samples.jsonl")}
    choice = {r["item_id"]: r for r in read_jsonl(tmp_path / "choice" / "samples.jsonl")}
    assert len(probs) == len(choice) == SAMPLE_ITEMS
    summed_differs = 0
    for item_id, r in probs.items():
        letters = "".join(r["options"])
        assert r["error"] is None and r["usage"]["completion_tokens"] == 0
        assert sum(r["letter_probs"].values()) == pytest.approx(1.0)
        assert 0 < r["letter_mass"] <= 1 and r["rule"] == "letter_probs"
        tops = r["answer_token"]["top_logprobs"]
        assert len([t for t in tops if token_letter(t["token"], letters)]) == 3 * len(letters)
        c = choice[item_id]
        assert c["constraint_followed"] and c["rule"] == "lone_letter"
        assert c["extracted"] == r["extracted"], item_id
        # Where the single most probable token names another letter, only the sum decides.
        best_token = max((t for t in tops if token_letter(t["token"], letters)),
                         key=lambda t: t["logprob"])
        summed_differs += token_letter(best_token["token"], letters) != r["extracted"]
    assert summed_differs > 0, "the test must include items where summing the spellings matters"
    print(f"\n{SAMPLE_ITEMS} items: choice == logprobs argmax on all; on {summed_differs} the "
          "most probable single token names another letter")
    summary = json.loads((tmp_path / "probs" / "summary.json").read_text())
    assert summary["calibration"]["n_items"] == SAMPLE_ITEMS
    choice_summary = json.loads((tmp_path / "choice" / "summary.json").read_text())
    assert choice_summary["invalid_rate"] == 0
    assert choice_summary["answer_mode"]["n_constraint_violations"] == 0
