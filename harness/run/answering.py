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

from harness.adapters.answer_modes import (
    LogprobsError,
    argmax_letter,
    read_letter_probs,
    token_letter,
    unwrap_choice,
)
from harness.adapters.base import ChatResponse
from harness.report.schema import SampleRecord
from harness.score.parsing import Extraction, parse_answer
from harness.score.scoring import official_correct

LETTER_PROBS_RULE = "letter_probs"


def read_answer(record: SampleRecord, response: ChatResponse, mode: str,
                extraction: Extraction | None = None) -> None:
    """Set the record's extracted, rule, correct, correct_official, plus what `mode` adds, for
    its item (options, gold letter, id); `extraction`: the response already parsed."""
    options, gold, letters = record.options, record.gold, record.letters
    text = response.text
    if mode != "free":
        record.answer_mode = mode
    if mode == "choice":
        unwrapped = unwrap_choice(text) if text.lstrip().startswith("{") else None
        if unwrapped is not None:
            text, extraction = unwrapped, None
            record.answer_text = unwrapped
        # One option letter, as the constraint allows it to be spelled (`A`; `(A` or ` A` where a
        # local model's letter mask admits every token spelling of a letter).
        record.constraint_followed = token_letter(text, letters) is not None
    extraction = extraction or parse_answer(text, options)
    letter, rule = extraction.letter, extraction.rule
    if mode == "logprobs":
        record.parsed = {"letter": letter, "rule": rule}
        try:
            reading = read_letter_probs(response.logprobs, letters)
        except LogprobsError as exc:
            record.letter_probs_problem = f"item {record.item_id}: {exc}"
        else:
            record.letter_probs, record.letter_mass = reading.letter_probs, reading.letter_mass
            record.answer_token = {"index": reading.token_index, **(reading.entry or {})} \
                if reading.entry else None
            if reading.letter_probs is None:
                record.letter_probs_problem = reading.problem
            else:
                letter, rule = argmax_letter(reading.letter_probs, letters), LETTER_PROBS_RULE
    record.extracted, record.rule, record.correct = letter, rule, letter == gold
    record.correct_official = gold is not None and official_correct(text, gold, options[gold])
