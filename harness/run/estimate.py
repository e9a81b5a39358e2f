"""`ubench run --dry-run`: what a run would send and cost, computed without sending anything.

Reads the same items the run would (resume included: items already answered are left out), takes
each image's size from its header (no pixels decoded), prices images by the model's published rule
from the price table, and counts text tokens with an offline tokenizer when one is installed
(`bpe-openai` ships OpenAI's encodings), else with a stated approximation. A few-shot template's
examples are chosen as the run chooses them (its bank is read and encoded, as the run does) and
their images and text counted by the same rules.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.adapters import split_spec
from harness.adapters.presets import PRESETS
from harness.data.images import ImageError, image_size, sent_size
from harness.data.sources import resolve_source
from harness.prompts import TemplateError, load_template, render
from harness.report.results import ESTIMATE_JSON, SAMPLES, answered_ids, write_json
from harness.run.fewshot import ExamplePoolError
from harness.score.pricing import PricingError, find_price, image_tokens, load_table
from harness.score.tokens import message_tokens, text_counter


def image_detail(model_spec: str, detail: str | None) -> str | None:
    """The detail the run would send: --image-detail, else the provider preset's."""
    preset = PRESETS.get(split_spec(model_spec)[0])
    return detail or (preset.image_detail if preset else None)


def estimate(config, outputs: list[tuple[str, Path]]) -> dict[str, Any]:
    """The estimate for `config` (a RunConfig) over the given (template, output folder) pairs;
    written to `config.output/estimate.json` and returned."""
    from harness.run.runner import (  # the run's own selection of items and few-shot banks
        InputError,
        _example_pools,
        _examples,
    )

    try:
        templates = [load_template(prompt) for prompt, _ in outputs]
        table = load_table(config.price_file)
    except TemplateError as exc:
        raise InputError(str(exc)) from exc
    except PricingError as exc:  # as the run refuses it
        raise InputError(f"--price-file: {exc}") from None
    price = find_price(config.model, table)
    detail = image_detail(config.model, config.image_detail)
    rule = price.image_rule if price else None
    counter_name, count = text_counter(split_spec(config.model)[1])
    done = [set() if config.force else answered_ids(Path(out) / SAMPLES)  # --force: all over
            for _, out in outputs]
    expected = table.get("expected_output_tokens") or {}
    out_per_request = [min(config.max_tokens, expected.get(t.name, config.max_tokens))
                       for t in templates]

    totals = {"requests": 0, "images": 0, "image_tokens": 0, "text_tokens": 0,
              "output_tokens": 0, "already_done": 0, "bad_input": 0, "example_images": 0,
              "example_image_tokens": 0}
    per_template = {t.name: {"requests": 0, "output_tokens_per_request": n}
                    for t, n in zip(templates, out_per_request)}
    sizes: dict[tuple[int, int], int] = {}
    source = resolve_source(config.dataset, config.revision)
    # few-shot templates: the bank the run would draw from (its images encoded, as the run does)
    pools = dict(zip((t.name for t in templates), _example_pools(templates, source, config)))
    for example in _examples(source, config):
        pending = [(t, n, item) for t, n, d in zip(templates, out_per_request, done)
                   for item in example.items if item.item_id not in d]
        totals["already_done"] += len(example.items) * len(templates) - len(pending)
        if not pending:
            continue
        try:
            if example.image_problem:
                raise ImageError(example.image_problem)
            width, height = sent_size(*image_size(example.image_bytes), config.max_pixels,
                                      config.max_image_side)
        except ImageError:
            totals["bad_input"] += len(pending)
            continue
        totals["images"] += 1
        sizes[(width, height)] = sizes.get((width, height), 0) + len(pending)
        per_image = image_tokens(rule, width, height, detail) if rule else 0
        sha256 = hashlib.sha256(example.image_bytes).hexdigest() if any(pools.values()) else None
        for template, n_out, item in pending:
            try:
                if item.problem:
                    raise ExamplePoolError(item.problem)
                pool = pools[template.name]
                shots = pool.choose(item, sha256) if pool is not None else []
            except ExamplePoolError:  # the run records it as bad input and sends nothing
                totals["bad_input"] += 1
                continue
            totals["requests"] += 1
            per_template[template.name]["requests"] += 1
            shot_tokens = sum(image_tokens(rule, s.image.width, s.image.height, detail)
                              for s in shots) if rule else 0
            totals["image_tokens"] += per_image + shot_tokens
            totals["example_images"] += len(shots)
            totals["example_image_tokens"] += shot_tokens
            messages = render(template, item.question, item.option_map, [s.shot() for s in shots])
            totals["text_tokens"] += message_tokens(messages, count)
            totals["output_tokens"] += n_out

    result = _priced(totals, price, rule is not None)
    result.update({
        "model": config.model,
        "image_detail": detail,
        "image_token_rule": ({"name": price.image_rule_name, **rule} if rule and price else None),
        "image_token_note": None if rule else
        "no published image-token rule for this model in the price table: image_tokens not "
        "counted, costs unknown",
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1])},
        "text_token_counter": counter_name,
        "output_tokens_assumption": "per request: " + ", ".join(
            f"{name} {info['output_tokens_per_request']}" for name, info in per_template.items())
        + f" (the price table's expected answer length for the template, at most --max-tokens "
          f"{config.max_tokens}; a template it does not list is assumed to use all of it)",
        "cached_input_assumption": "none (the prompt cache needs 1,024 identical leading tokens)",
        "templates": per_template,
        "pricing": price.describe() if price else None,
    })
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / ESTIMATE_JSON, result)
    return result


def _priced(totals: dict[str, int], price, images_counted: bool) -> dict[str, Any]:
    input_tokens = totals["image_tokens"] + totals["text_tokens"]
    cost = batch = None
    if price is not None and images_counted:
        cost = round(price.cost(input_tokens, totals["output_tokens"]), 4)
        if price.batch_discount is not None:
            batch = round(price.cost(input_tokens, totals["output_tokens"], batch=True), 4)
    return {**totals, "input_tokens": input_tokens, "cost_usd": cost, "cost_usd_batch": batch}


def estimate_text(result: dict[str, Any]) -> str:
    """What --dry-run prints."""
    def usd(v: float | None) -> str:
        return "unknown" if v is None else f"${v:,.2f}"

    lines = [f"Dry run for {result['model']}: nothing was sent.",
             f"  requests       {result['requests']:,} on {result['images']:,} images "
             f"({result['already_done']:,} already answered, {result['bad_input']:,} bad input)",
             f"  image tokens   {result['image_tokens']:,} (detail {result['image_detail']}; "
             + (f"rule {result['image_token_rule']['name']}" if result["image_token_rule"]
                else "no rule known for this model")
             + (f"; {result['example_image_tokens']:,} of them for "
                f"{result['example_images']:,} few-shot example images)"
                if result["example_images"] else ")"),
             f"  text tokens    {result['text_tokens']:,} ({result['text_token_counter']})",
             f"  output tokens  {result['output_tokens']:,} ({result['output_tokens_assumption']})",
             f"  cost           {usd(result['cost_usd'])}, through the Batch API "
             f"{usd(result['cost_usd_batch'])}"]
    return "\n".join(lines)
