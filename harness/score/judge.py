"""The optional LLM judge: the last rule, asked only about responses the parser left invalid.

Any adapter can judge (`--judge vllm/Qwen2.5-7B-Instruct`). It sees the options and the response
(text only) and names the one option the response committed to, or NONE; its reply is read with the
same `parse_answer`, so a judge cannot smuggle in a letter the rules would not accept. Its replies
go through the same response cache as the model's (keyed by exactly what it was shown), so a re-run
never asks twice. Records it decides get `rule: "judge"` and keep the parser's verdict in
`rule_before_judge`; the summary reports accuracy with and without the judge.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

from harness.adapters import Adapter, AdapterError, ChatRequest, GenerationParams
from harness.run.retry import RetryPolicy
from harness.score.parsing import INVALID_PREFIX, parse_answer

RULE = "judge"
PROMPT = """Below are the options of a multiple-choice question and a model's response to it. \
Which single option did the response commit to as its final answer? Judge only what the response \
says, not which option is correct. If it committed to no option, or to more than one, answer NONE.

Question: {question}
Options:
{options}

Response:
\"\"\"
{response}
\"\"\"

Reply with only the letter of the option, or NONE."""
PROMPT_SHA256 = hashlib.sha256(PROMPT.encode()).hexdigest()
PARAMS = GenerationParams(temperature=0.0, max_tokens=256, seed=0)
# Nothing to judge in an empty response.
SKIPPED = (INVALID_PREFIX + "empty",)


class Judge:
    """Asks `adapter` (cached like any model) about invalid responses, through the retry policy."""

    def __init__(self, adapter: Adapter, policy: RetryPolicy):
        self.adapter = adapter
        self.policy = policy

    def describe(self) -> dict[str, Any]:
        return {"model": self.adapter.describe(), "prompt_sha256": PROMPT_SHA256}

    async def review(self, record: dict[str, Any], question: str) -> None:
        """Ask about `record` if the parser left it invalid, and write the outcome into it."""
        if record.get("error") or not str(record["rule"]).startswith(INVALID_PREFIX) or (
                record["rule"] in SKIPPED):
            return
        options, response = record["options"], record["response"]
        prompt = PROMPT.format(question=question, response=response, options="\n".join(
            f"{letter}) {text}" for letter, text in options.items()))
        request = ChatRequest(f"judge:{record['item_id']}",
                              [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                              None, PARAMS, "".join(options))
        try:
            reply = await self.policy.call(lambda: self.adapter.complete(request))
        except AdapterError as exc:
            record["judge"] = {"model": self.adapter.spec, "error": exc.as_record()}
            return
        verdict = parse_answer(reply.text, options)
        record["judge"] = {"model": self.adapter.spec, "reply": reply.text, "rule": verdict.rule,
                           "cached": reply.meta.get("cache") == "hit"}
        if verdict.valid:
            record["rule_before_judge"] = record["rule"]
            record.update({"extracted": verdict.letter, "rule": RULE,
                           "correct": verdict.letter == record["gold"]})

    async def aclose(self) -> None:
        await self.adapter.aclose()


def judge_summary(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Accuracy and invalid rate without and with the judge; None when no judge was asked."""
    scored = [r for r in records if not r.get("error")]
    asked = [r for r in scored if "judge" in r]
    if not asked:
        return None
    decided = sum(r["rule"] == RULE for r in scored)
    correct_with = sum(bool(r["correct"]) for r in scored)
    correct_by_judge = sum(bool(r["correct"]) for r in scored if r["rule"] == RULE)
    invalid_with = sum(str(r["rule"]).startswith(INVALID_PREFIX) for r in scored)
    n = len(scored)
    return {
        "model": asked[0]["judge"]["model"],
        "n_asked": len(asked),
        "n_decided": decided,
        "n_errors": sum("error" in r["judge"] for r in asked),
        "without": {"accuracy": (correct_with - correct_by_judge) / n,
                    "invalid_rate": (invalid_with + decided) / n},
        "with": {"accuracy": correct_with / n, "invalid_rate": invalid_with / n},
    }
