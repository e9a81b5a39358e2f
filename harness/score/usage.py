"""Token usage, latency and cost of a run, summed over its final records.

A record answered from the response cache cost nothing in this run and is counted apart
(`cache_hits`); a record whose server sent no usable `usage` is counted in `requests_without_usage`
and makes `cost_complete` false. Cost is None when the model has no price, never 0. The LLM judge's
requests are summed the same way but apart (`judge_usage`), with the judge's own price.
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, TypeGuard

import numpy as np

from harness.report.schema import (
    JudgeUsage,
    Latency,
    SampleRecord,
    Summary,
    Usage,
    UsageSummary,
)
from harness.score.pricing import Price

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")


def usage_counts(usage: Any) -> dict[str, int] | None:
    """The four counts of one server `usage` object, or None when it is missing or malformed.

    OpenAI nests cached and reasoning tokens in `prompt_tokens_details` and
    `completion_tokens_details`; a server that leaves them out reports 0 of them.
    """
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not _count(prompt) or not _count(completion):
        return None
    cached = (usage.get("prompt_tokens_details") or {})
    reasoning = (usage.get("completion_tokens_details") or {})
    cached = cached.get("cached_tokens") if isinstance(cached, dict) else None
    reasoning = reasoning.get("reasoning_tokens") if isinstance(reasoning, dict) else None
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": cached if _count(cached) else 0,
            "reasoning_tokens": reasoning if _count(reasoning) else 0}


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Request(NamedTuple):
    """What one request's usage and cost are summed from: a record's, or the judge's about it."""

    usage: Any  # the server's `usage` object, untouched
    cached: bool = False  # answered from the response cache: it cost nothing in this run
    failed: bool = False
    latency_s: float | None = None
    batch: bool = False  # priced at the Batch API's rate


def _record_request(record: SampleRecord) -> Request:
    return Request(record.usage, record.cached, record.error is not None, record.latency_s,
                   bool(record.batch_id))


def _judge_request(judged: dict[str, Any]) -> Request:
    """A record's (or `extract` line's) `judge`: its usage as sent; no latency is recorded."""
    return Request(judged.get("usage"), bool(judged.get("cached")), "error" in judged)


def _cost(request: Request, price: Price | None) -> float | None:
    """USD of one request (batch-priced when it went through a batch), or None."""
    counts = usage_counts(request.usage)
    if price is None or counts is None or request.cached:
        return None
    return price.cost(counts["prompt_tokens"], counts["completion_tokens"],
                      counts["cached_tokens"], batch=request.batch)


def usage_summary(records: Iterable[SampleRecord], price: Price | None) -> UsageSummary:
    """summary.json's `usage`, `latency_s`, `cost_usd` and `pricing`."""
    return _summed(map(_record_request, records), price)


def _summed(requests: Iterable[Request], price: Price | None) -> UsageSummary:
    totals = dict.fromkeys(USAGE_FIELDS, 0)
    n = without = hits = 0
    cost = 0.0
    latencies = []
    for r in requests:
        if r.failed:
            continue
        if r.cached:
            hits += 1
            continue
        n += 1
        if r.latency_s is not None:
            latencies.append(float(r.latency_s))
        counts = usage_counts(r.usage)
        if counts is None:
            without += 1
            continue
        for name in USAGE_FIELDS:
            totals[name] += counts[name]
        if price is not None:
            cost += _cost(r, price) or 0.0  # never None here: priced, counted, not cached
    latency: Latency | None = None
    if latencies:
        p50, p90, p99 = np.percentile(np.array(latencies), [50, 90, 99])
        latency = {"n": len(latencies), "p50": round(float(p50), 4), "p90": round(float(p90), 4),
                   "p99": round(float(p99), 4)}
    usage: Usage = {"requests": n, "prompt_tokens": totals["prompt_tokens"],
                    "completion_tokens": totals["completion_tokens"],
                    "cached_tokens": totals["cached_tokens"],
                    "reasoning_tokens": totals["reasoning_tokens"],
                    "requests_without_usage": without, "cache_hits": hits}
    return {
        "usage": usage,
        "latency_s": latency,
        "cost_usd": None if price is None else round(cost, 6),
        "cost_complete": price is not None and without == 0,
        "pricing": price.describe() if price is not None else None,
    }


def judge_usage(judged: Iterable[dict[str, Any]], price: Price | None) -> JudgeUsage | None:
    """summary.json's `judge_usage`: the judge's requests, tokens and cost, summed as the model's
    are but apart from them, over the `judge` of each record (or `extract` line) it was asked
    about; None without a judge."""
    asked = list(judged)
    if not asked:
        return None
    summary = _summed((_judge_request(j) for j in asked), price)
    return {"model": asked[0].get("model"), "usage": summary["usage"],  # no latency recorded
            "cost_usd": summary["cost_usd"], "cost_complete": summary["cost_complete"],
            "pricing": summary["pricing"]}


def estimate_check(estimate: Any, usage: Usage) -> dict[str, Any] | None:
    """The --dry-run estimate beside what the server reported, per request: the way to settle
    which image-token reading (upscale or not) the provider applies."""
    try:
        per_request = estimate["input_tokens"] / estimate["requests"]
        rule = estimate.get("image_token_rule") or {}
    except (TypeError, KeyError, ZeroDivisionError, AttributeError):
        return None
    if not usage["requests"] or usage["requests_without_usage"]:
        return None
    return {"estimated_input_tokens_per_request": round(per_request, 1),
            "reported_prompt_tokens_per_request": round(usage["prompt_tokens"] / usage["requests"], 1),
            "image_token_rule": rule.get("name"), "upscale_short_side": rule.get("upscale_short_side")}


def usage_text(summary: Summary) -> str | None:
    """One line for summary.md and the report: requests, tokens, latency, cost."""
    usage = summary.get("usage")
    if not usage:
        return None
    parts = _counts(usage)
    latency = summary.get("latency_s")
    if latency:
        parts.append(f"latency p50 {latency['p50']:.2f} s, p90 {latency['p90']:.2f} s, "
                     f"p99 {latency['p99']:.2f} s")
    if check := summary.get("estimate_check"):
        parts.append(f"--dry-run estimated {check['estimated_input_tokens_per_request']:,} input "
                     f"tokens per request, the server reported "
                     f"{check['reported_prompt_tokens_per_request']:,}")
    parts.append(cost_text(summary.get("cost_usd"), summary.get("cost_complete", True)))
    return "; ".join(parts) + "."


def judge_usage_text(judged: JudgeUsage | None) -> str | None:
    """The judge's line for summary.md, the report and `ubench extract` (from summary.json's
    `judge_usage`): its own requests, tokens and cost, beside (never inside) the evaluated
    model's."""
    if not judged:
        return None
    parts = [*_counts(judged["usage"]), cost_text(judged["cost_usd"], judged["cost_complete"])]
    return f"{judged['model']}: " + "; ".join(parts) + "."


def _counts(usage: Usage) -> list[str]:
    """Requests and tokens of a `usage` block, in words."""
    parts = [f"{usage['requests']} requests", f"{usage['prompt_tokens']:,} prompt tokens "
             f"({usage['cached_tokens']:,} cached)", f"{usage['completion_tokens']:,} completion "
             f"tokens ({usage['reasoning_tokens']:,} reasoning)"]
    if usage.get("cache_hits"):
        parts.append(f"{usage['cache_hits']} answered from the cache (not counted)")
    if usage.get("requests_without_usage"):
        parts.append(f"{usage['requests_without_usage']} without usage from the server")
    return parts


def cost_text(cost: float | None, complete: bool = True) -> str:
    """The cost line of the CLI and summary: unknown without a price, a lower bound when partial."""
    if cost is None:
        return "cost unknown (no price for this model)"
    return f"cost ${cost:,.4f}" + ("" if complete else " (lower bound: some usage missing)")
