"""A response → the answer fields of its record, in each answer mode (adapters.answer_modes).

- `free`: the parser reads the letter out of the response; both scorers score the response.
- `choice`: the same, on the answer the constraint produced (for a JSON-schema reply, its `answer`
  field; `response` keeps the raw JSON). `constraint_followed` says whether the reply was one of
  the item's letters: a server that ignores the constraint is counted, not hidden.
- `logprobs`: `letter_probs` and `letter_mass` from the answer token's top logprobs, and the
  predicted letter is their argmax (ties: the letter listed first), with `rule: "letter_probs"`.
  The parser's reading of the text is kept as `parsed` (it must agree). Without letter
  probabilities (none returned, no letter in the top-k) the parser's letter stands and
  `letter_probs_problem` says why.
"""
from __future__ import annotations

from typing import Any

from harness.adapters.answer_modes import (
    LogprobsError,
    argmax_letter,
    read_letter_probs,
    token_letter,
    unwrap_choice,
)
from harness.adapters.base import ChatResponse
from harness.score.parsing import Extraction, parse_answer
from harness.score.scoring import official_correct

LETTER_PROBS_RULE = "letter_probs"


def answer_fields(response: ChatResponse, record: dict[str, Any], mode: str,
                  extraction: Extraction | None = None) -> dict[str, Any]:
    """extracted, rule, correct, correct_official, plus what `mode` adds, for the item of
    `record` (its options, gold letter and id); `extraction`: the response already parsed."""
    options, gold, item_id = record["options"], record["gold"], record["item_id"]
    letters = "".join(options)
    text = response.text
    extra: dict[str, Any] = {}
    if mode == "choice":
        unwrapped = unwrap_choice(text) if text.lstrip().startswith("{") else None
        if unwrapped is not None:
            text, extraction = unwrapped, None
            extra["answer_text"] = unwrapped
        # One option letter, as the constraint allows it to be spelled (`A`; `(A` or ` A` where a
        # local model's letter mask admits every token spelling of a letter).
        extra["constraint_followed"] = token_letter(text, letters) is not None
    extraction = extraction or parse_answer(text, options)
    letter, rule = extraction.letter, extraction.rule
    if mode == "logprobs":
        extra["parsed"] = {"letter": letter, "rule": rule}
        try:
            reading = read_letter_probs(response.logprobs, letters)
        except LogprobsError as exc:
            extra.update(letter_probs=None, letter_mass=None,
                         letter_probs_problem=f"item {item_id}: {exc}")
        else:
            extra.update(letter_probs=reading.letter_probs, letter_mass=reading.letter_mass,
                         answer_token={"index": reading.token_index, **(reading.entry or {})}
                         if reading.entry else None)
            if reading.letter_probs is None:
                extra["letter_probs_problem"] = reading.problem
            else:
                letter, rule = argmax_letter(reading.letter_probs, letters), LETTER_PROBS_RULE
    return {
        "extracted": letter,
        "rule": rule,
        "correct": letter == gold,
        "correct_official": official_correct(text, gold, options[gold]),
        **({"answer_mode": mode} if mode != "free" else {}),
        **extra,
    }
