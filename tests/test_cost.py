"""Usage, latency and cost accounting, and the --dry-run estimate, driven through the CLI."""
from __future__ import annotations

import json

import pytest

from harness.score.pricing import PricingError, find_price, image_tokens, load_table
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench

TABLE = load_table()
GPT4O = find_price("openai/gpt-4o", TABLE).image_rule


@pytest.mark.parametrize("size, detail, tokens", [
    ((1024, 1024), "high", 765),   # the vision guide's examples
    ((2048, 4096), "high", 1105),
    ((4096, 8192), "low", 85),
    ((512, 512), "high", 255),     # one tile; small images are not scaled up by default
    ((360, 363), "high", 255),
])
def test_gpt4o_image_tokens_match_the_published_examples(size, detail, tokens):
    assert image_tokens(GPT4O, *size, detail) == tokens


def test_the_upscale_reading_of_the_rule_is_an_option():
    assert image_tokens({**GPT4O, "upscale_short_side": True}, 360, 363, "high") == 765


@pytest.mark.parametrize("size, patches", [((1024, 1024), 1024), ((1800, 2400), 1452)])
def test_patch_rule_matches_the_published_examples(size, patches):
    rule = {**find_price("openai/gpt-4.1-mini", TABLE).image_rule, "multiplier": 1}
    assert image_tokens(rule, *size) == patches


def test_models_match_by_longest_prefix_and_unknown_models_have_no_price():
    assert find_price("openai/gpt-4o-2024-08-06", TABLE).key == "openai/gpt-4o"
    assert find_price("openai/gpt-4o-mini", TABLE).key == "openai/gpt-4o-mini"
    assert find_price("openai/gpt-4oxyz", TABLE) is None
    assert find_price("vllm/gpt-4o", TABLE) is None


def test_a_bad_price_file_names_the_field(tmp_path):
    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  openai/x: {input: -1, output: 2}\n")
    with pytest.raises(PricingError, match=r"models\.openai/x\.input"):
        load_table(bad)


@pytest.mark.parametrize("extra", [[], ["--max-cost", "5"], ["--dry-run"]])
def test_a_run_refuses_a_bad_price_file_with_exit_2_before_anything(tmp_path, extra):
    bad = tmp_path / "prices.yaml"
    bad.write_text("models: [1, 2]\n")
    out = tmp_path / "run"
    proc = ubench("run", "--model", "random", "--price-file", str(bad), "--output", str(out),
                  "--no-progress", "--limit", "2", *extra, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: --price-file: {bad}: field 'models' must be a mapping of provider/model to "
        "prices"]
    assert not (out / "manifest.json").exists() and not (out / "samples.jsonl").exists()


def _prices(tmp_path, model="openai/test-model", **extra):
    path = tmp_path / "prices.yaml"
    entry = {"input": 2.0, "cached_input": 0.5, "output": 8.0, "batch_discount": 0.5,
             "image_rule": "tiles", **extra}
    path.write_text(json.dumps({
        "version": "test", "source": "tests",
        "models": {model: entry},
        "image_rules": {"tiles": {"method": "tiles", "base": 85, "per_tile": 170, "low": 85,
                                  "fit": 2048, "short_side": 768, "tile": 512}},
        "expected_output_tokens": {"official": 2}}))
    return path


def test_summary_usage_equals_what_the_server_reported_and_cost_follows(tmp_path):
    out = tmp_path / "run"
    prices = _prices(tmp_path)
    with TestServer("random", usage_details=True) as server:
        ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
               "--output", str(out), "--price-file", str(prices), "--no-progress")
        reported = dict(server.stats.usage)
    summary = json.loads((out / "summary.json").read_text())
    usage = summary["usage"]
    assert reported["requests"] == usage["requests"] == len(read_jsonl(out / "samples.jsonl"))
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
        assert usage[name] == reported[name], name
    assert reported["cached_tokens"] > 0 and reported["reasoning_tokens"] > 0
    expected = ((reported["prompt_tokens"] - reported["cached_tokens"]) * 2.0
                + reported["cached_tokens"] * 0.5 + reported["completion_tokens"] * 8.0) / 1e6
    assert summary["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert summary["latency_s"]["p50"] <= summary["latency_s"]["p90"] <= summary["latency_s"]["p99"]
    record = read_jsonl(out / "samples.jsonl")[0]
    assert record["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0  # as the server sent it
    assert record["attempts"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pricing"]["input"] == 2.0 and manifest["pricing"]["table"] == str(prices)
    assert "cost $" in (out / "summary.md").read_text()
    assert "usage and cost" in (out / "report.html").read_text()

    # ubench score recomputes the same numbers from the recorded prices; compare shows the cost
    ubench("score", str(out))
    assert json.loads((out / "summary.json").read_text())["cost_usd"] == summary["cost_usd"]
    other = tmp_path / "random"
    ubench("run", "--model", "random", "--output", str(other), "--no-progress")
    assert json.loads((other / "summary.json").read_text())["cost_usd"] is None  # never 0
    proc = ubench("compare", str(out), str(other))
    assert f"{summary['cost_usd']:,.4f}" in proc.stdout and "cost USD" in proc.stdout


ESTIMATE_TOLERANCE = 0.01  # README, --dry-run: against a server counting by the same rules


def test_dry_run_counts_few_shot_examples_as_the_server_counts_the_requests(tmp_path):
    # few-shot-3 puts three worked examples (an image, its question and options, the gold
    # letter) before each item: the estimate grows by their images and text, and equals what a
    # server counting each request as sent (every image by the published rule) reports.
    prices = _prices(tmp_path)
    rule = json.loads(prices.read_text())["image_rules"]["tiles"]
    estimates = {}
    for template in ("official", "few-shot-3"):
        out = tmp_path / template
        args = ["run", "--model", "openai/test-model", "--prompt", template, "--output", str(out),
                "--price-file", str(prices), "--limit", "12", "--no-progress"]
        proc = ubench(*args, "--dry-run")
        estimates[template] = est = json.loads((out / "estimate.json").read_text())
        with TestServer("random", prompt_rule=rule) as server:
            ubench(*args, "--base-url", server.base_url)
            reported = server.stats.usage["prompt_tokens"]
        assert server.stats.requests == est["requests"] == 12
        assert abs(est["input_tokens"] - reported) <= ESTIMATE_TOLERANCE * reported, (
            template, est["input_tokens"], reported)
        check = json.loads((out / "summary.json").read_text())["estimate_check"]
        assert check["reported_prompt_tokens_per_request"] == round(reported / 12, 1)
    plain, shots = estimates["official"], estimates["few-shot-3"]
    assert plain["example_images"] == 0 and shots["example_images"] == 3 * 12
    # the sample's 96x96 images are 255 tokens each at high detail, examples as the item's own
    assert shots["example_image_tokens"] == 3 * 12 * 255
    assert shots["image_tokens"] == plain["image_tokens"] + shots["example_image_tokens"]
    assert shots["text_tokens"] > 2 * plain["text_tokens"]  # three more questions and answers
    assert "of them for 36 few-shot example images" in proc.stdout


def test_dry_run_sends_nothing_and_estimates_with_the_published_rule(tmp_path):
    out = tmp_path / "est"
    prices = _prices(tmp_path)
    with TestServer("random") as server:
        proc = ubench("run", "--model", "openai/test-model", "--base-url", server.base_url,
                      "--output", str(out), "--price-file", str(prices), "--dry-run")
        assert server.stats.requests == 0
    est = json.loads((out / "estimate.json").read_text())
    assert not (out / "samples.jsonl").exists()
    # the sample's images are 96x96 PNGs: one 512-px tile each at high detail
    assert est["image_sizes"] == {"96x96": est["requests"]}
    assert est["image_tokens"] == 255 * est["requests"]
    assert est["output_tokens"] == 2 * est["requests"]
    assert est["text_token_counter"] and est["output_tokens_assumption"]
    input_tokens = est["image_tokens"] + est["text_tokens"]
    assert est["cost_usd"] == pytest.approx((input_tokens * 2 + est["output_tokens"] * 8) / 1e6,
                                            abs=1e-4)
    assert est["cost_usd_batch"] == pytest.approx(est["cost_usd"] / 2, abs=1e-4)
    assert "nothing was sent" in proc.stdout

    low = ubench("run", "--model", "openai/test-model", "--output", str(tmp_path / "low"),
                 "--price-file", str(prices), "--dry-run", "--image-detail", "low",
                 "--limit", "5")
    low_estimate = json.loads((tmp_path / "low" / "estimate.json").read_text())
    assert low_estimate["image_tokens"] == 5 * 85
    assert "5 on" in low.stdout
    with TestServer("random") as server:  # the run then puts the estimate beside what was reported
        ubench("run", "--model", "openai/test-model", "--output", str(tmp_path / "low"),
               "--price-file", str(prices), "--image-detail", "low", "--limit", "5",
               "--base-url", server.base_url)
    check = json.loads((tmp_path / "low" / "summary.json").read_text())["estimate_check"]
    assert check["reported_prompt_tokens_per_request"] == 10  # what the test server reports
    assert check["estimated_input_tokens_per_request"] == round(low_estimate["input_tokens"] / 5, 1)

    unknown = ubench("run", "--model", "vllm/some-model", "--output", str(tmp_path / "u"),
                     "--dry-run")
    est = json.loads((tmp_path / "u" / "estimate.json").read_text())
    assert est["cost_usd"] is None and est["image_token_rule"] is None
    assert "unknown" in unknown.stdout


def test_every_shipped_template_has_an_expected_output_length():
    """A shipped template missing from the table would be estimated at all of --max-tokens per
    request (a one-letter prompt's dry-run cost overstated hundreds of times)."""
    from harness.prompts import builtin_names

    expected = load_table(None)["expected_output_tokens"]
    assert sorted(set(builtin_names()) - set(expected)) == []
    assert all(isinstance(n, int) and n > 0 for n in expected.values())
