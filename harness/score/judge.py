"""The optional LLM judge: the last rule, asked only about responses the parser left invalid.

Any adapter can judge (`--judge vllm/Qwen2.5-7B-Instruct`), for `ubench run` and `ubench extract`.
It sees the question, the options and the response's conclusion (text only: at most its last
`RESPONSE_TAIL` characters once reasoning blocks and template tokens are removed, so a 1 MB ramble
costs no more than a short answer) and names the one option the response committed to, or NONE.
Its reply is read with the same `parse_answer`, so a judge cannot smuggle in a letter the rules
would not accept, and is kept raw in `judge_raw`. Its replies go through the same response cache as
the model's (keyed by exactly what it was shown), so a re-run never asks twice. Records it decides
get `rule: "judge"` and keep the parser's verdict in `rule_before_judge`; the summary reports
accuracy with and without the judge, and the judge's own tokens and cost (`judge_usage`, never
added to the evaluated model's).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness import config
from harness.adapters import Adapter, AdapterError, ChatRequest, GenerationParams, create_adapter
from harness.report.schema import ErrorInfo, JudgeSummary, SampleRecord
from harness.run.cache import CachedAdapter, ResponseCache
from harness.run.retry import RetryPolicy
from harness.score.parsing import INVALID_PREFIX, clean, parse_answer

RULE = "judge"
RESPONSE_TAIL = 2_000  # characters of the response's end the judge is shown
PROMPT = """Below are the options of a multiple-choice question and a model's response to it. \
Which single option did the response commit to as its final answer? Judge only what the response \
says, not which option is correct. If it committed to no option, or to more than one, answer NONE.

Question: {question}
Options:
{options}

Response{cut}:
\"\"\"
{response}
\"\"\"

Reply with only the letter of the option, or NONE."""
PROMPT_SHA256 = hashlib.sha256(PROMPT.encode()).hexdigest()
PARAMS = GenerationParams(temperature=0.0, max_tokens=256, seed=0)
# Nothing to judge in an empty response.
SKIPPED = (INVALID_PREFIX + "empty",)


def judge_prompt(question: str, options: Mapping[str, str], response: str) -> str:
    """What the judge is asked: the response's conclusion only, said so when it was cut."""
    text = clean(response, options)
    cut = len(text) > RESPONSE_TAIL
    return PROMPT.format(
        question=question, response=text[-RESPONSE_TAIL:] if cut else text,
        cut=f" (its last {RESPONSE_TAIL:,} characters)" if cut else "",
        options="\n".join(f"{letter}) {option}" for letter, option in options.items()))


def needs_judge(rule: str | None) -> bool:
    """Whether the parser's verdict `rule` leaves a response for the judge (invalid, not empty)."""
    return rule is not None and rule.startswith(INVALID_PREFIX) and rule not in SKIPPED


@dataclass
class Verdict:
    """What the judge said about one response: `judge` as a record stores it (its model and
    reply, or its error), its raw reply, and the option letter it named (None: none or failed)."""

    judge: dict[str, Any]
    raw: str | None
    letter: str | None

    def updates(self, rule: str | None, gold: str | None, graded: bool) -> dict[str, Any]:
        """The fields of a judged record (a run's, or an `extract` line): the verdict, and when
        it named a letter, the new reading (the parser's kept as `rule_before_judge`) and, if the
        record is `graded` against `gold`, its correctness."""
        out: dict[str, Any] = {"judge": self.judge}
        if self.raw is not None:
            out["judge_raw"] = self.raw
        if self.letter is not None:
            out.update(rule_before_judge=rule, extracted=self.letter, rule=RULE)
            if graded:
                out["correct"] = self.letter == gold
        return out


class Judge:
    """Asks `adapter` (cached like any model) about invalid responses, through the retry policy."""

    def __init__(self, adapter: Adapter, policy: RetryPolicy):
        self.adapter = adapter
        self.policy = policy

    def describe(self) -> dict[str, Any]:
        """The judge's model, prompt hash and settings, for the manifest of its verdicts."""
        return {"model": self.adapter.describe(), "prompt_sha256": PROMPT_SHA256,
                "response_tail_chars": RESPONSE_TAIL}

    def use_cache(self, cache: ResponseCache) -> None:
        """Answer from `cache` what this judge was already asked."""
        identity = self.adapter.cache_identity()
        if identity is not None:
            self.adapter = CachedAdapter(self.adapter, cache, identity)

    async def review(self, record: SampleRecord, question: str) -> bool:
        """Ask about `record` if the parser left it invalid, and write the verdict into it;
        whether it was asked."""
        if record.error is not None or not needs_judge(record.rule):
            return False
        verdict = await self.verdict(record.item_id, question, record.options,
                                     record.response or "")
        for name, value in verdict.updates(record.rule, record.gold, True).items():
            setattr(record, name, value)
        return True

    async def verdict(self, item_id: str, question: str, options: Mapping[str, str],
                      response: str) -> Verdict:
        """What the judge says `response` committed to (asked through the retry policy)."""
        prompt = judge_prompt(question, options, response)
        request = ChatRequest(f"judge:{item_id}",
                              [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                              None, PARAMS, "".join(options))
        try:
            reply = await self.policy.call(lambda: self.adapter.complete(request))
        except AdapterError as exc:
            return Verdict({"model": self.adapter.spec,
                            "error": ErrorInfo.from_adapter(exc).to_json()}, None, None)
        verdict = parse_answer(reply.text, options)
        return Verdict({"model": self.adapter.spec, "reply": reply.text, "rule": verdict.rule,
                        "cached": reply.meta.get("cache") == "hit",
                        "usage": reply.usage},  # as sent: summed apart from the model's
                       reply.text, verdict.letter)

    async def aclose(self) -> None:
        """Close the judge's adapter."""
        await self.adapter.aclose()


def build_judge(spec: str, *, base_url: str | None = None, seed: int | None = 0,
                timeout: float = config.TIMEOUT_S, concurrency: int = config.CONCURRENCY,
                max_attempts: int = config.MAX_ATTEMPTS) -> Judge:
    """The judge for a model spec; ValueError names what is wrong with it."""
    adapter = create_adapter(spec, base_url=base_url, seed=seed, timeout=timeout,
                             concurrency=concurrency)
    return Judge(adapter, RetryPolicy(max_attempts=max_attempts))


def judge_summary(records: Iterable[SampleRecord]) -> JudgeSummary | None:
    """Accuracy and invalid rate without and with the judge; None when no judge was asked."""
    scored = [r for r in records if r.error is None]
    asked = [r.judge for r in scored if r.judge is not None]
    if not asked:
        return None
    decided = sum(r.rule == RULE for r in scored)
    correct_with = sum(bool(r.correct) for r in scored)
    correct_by_judge = sum(bool(r.correct) for r in scored if r.rule == RULE)
    invalid_with = sum(str(r.rule).startswith(INVALID_PREFIX) for r in scored)
    n = len(scored)
    return {
        "model": asked[0]["model"],
        "n_asked": len(asked),
        "n_decided": decided,
        "n_errors": sum("error" in judged for judged in asked),
        "without": {"accuracy": (correct_with - correct_by_judge) / n,
                    "invalid_rate": (invalid_with + decided) / n},
        "with": {"accuracy": correct_with / n, "invalid_rate": invalid_with / n},
    }
