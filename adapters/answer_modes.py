"""Answer modes: how a request constrains the answer to the option letters, or asks for the
model's probability over them, and how those probabilities are read back.

- `free`: today's request; a parser reads the letter out of free text.
- `choice`: the output is constrained to one of the item's letters. vLLM: `structured_outputs:
  {"choice": [...]}` in the body (vLLM >= 0.12; `guided_choice` is gone). OpenAI: a strict
  `response_format` JSON schema `{"answer": enum of the letters}`, so the reply is JSON and
  `unwrap_choice` reads the letter out of it. transformers/: a logits mask at generation.
- `logprobs`: `logprobs: true, top_logprobs: N` on the unconstrained request. vLLM applies the
  structured-output mask *before* computing logprobs, so combining it with `choice` would hide the
  mass outside the letters; the two modes stay apart.

The letter distribution is read at the answer token (the first generated token that spells an
option letter, else the first token): tokens spelling the same letter (`"A"`, `" A"`, `"(A"`) are
summed, letters absent from the top-k get 0, and the result is renormalised over the item's letters;
`letter_mass` is the probability the letters had before that. The prediction is the argmax, ties
broken by option order (the first listed letter wins).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson

from .presets import capabilities, is_reasoning_model

ANSWER_MODES = ("free", "choice", "logprobs")
OPENAI_MAX_TOP_LOGPROBS = 20
DEFAULT_TOP_LOGPROBS = 20
CHOICE_SCHEMA_NAME = "option_letter"
# Around a letter, a token may carry spaces and an opening/closing bracket or emphasis.
_LETTER_TOKEN = re.compile(r"^\s*[\(\[\*]*([A-Z])[\)\]\.:\*]*\s*$")
# Hosted OpenAI-compatible endpoints known to return no logprobs, when reached as openai/ with
# --base-url (as gemini/ or anthropic/, their presets say so).
_HOSTS_NO_LOGPROBS = {"api.anthropic.com": "Anthropic's OpenAI-compatible endpoint",
                      "generativelanguage.googleapis.com": "Gemini's OpenAI-compatible endpoint"}


def unsupported(provider: str, model: str, base_url: str | None, mode: str) -> str | None:
    """The capability `provider/model` lacks for `mode`, in words; None when it has it.

    Declared per provider: vLLM and transformers/ support every mode; the random baseline has no
    token probabilities; hosted presets declare what they lack (`adapters.presets`), and OpenAI's
    reasoning models return no logprobs.
    """
    if mode not in ANSWER_MODES:
        return f"unknown answer mode {mode!r} (use one of {', '.join(ANSWER_MODES)})"
    if mode != "logprobs":
        return None
    if not capabilities(provider).logprobs:
        return ("token logprobs: the random baseline has no token probabilities"
                if provider == "random" else
                f"token logprobs: the {provider} endpoint does not return logprobs")
    host = urlparse(base_url or "").hostname or ""
    if host in _HOSTS_NO_LOGPROBS:
        return f"token logprobs: {_HOSTS_NO_LOGPROBS[host]} does not return logprobs"
    if provider in ("openai", "azure") and (not base_url or host.endswith((
            "api.openai.com", "openai.azure.com"))) and is_reasoning_model(model):
        return (f"token logprobs: OpenAI reasoning models ({model}) do not return logprobs; "
                "use --answer-mode free or choice")
    return None


def request_fields(provider: str, mode: str, letters: str, top_logprobs: int | None
                   ) -> dict[str, Any]:
    """What `mode` adds to a chat-completions body for `provider` (`openai` or `vllm`)."""
    if mode == "choice":
        if provider == "vllm":
            return {"structured_outputs": {"choice": list(letters)}}
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": CHOICE_SCHEMA_NAME, "strict": True,
            "schema": {"type": "object",
                       "properties": {"answer": {"type": "string", "enum": list(letters)}},
                       "required": ["answer"], "additionalProperties": False}}}}
    if mode == "logprobs":
        return {"logprobs": True, "top_logprobs": top_logprobs or DEFAULT_TOP_LOGPROBS}
    return {}


def unwrap_choice(text: str) -> str | None:
    """The `answer` of a JSON-schema choice reply (`{"answer": "B"}`); None when it is not one."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    answer = value.get("answer") if isinstance(value, dict) else None
    return answer if isinstance(answer, str) else None


def token_letter(token: str, letters: str) -> str | None:
    """The option letter a token spells (`"A"`, `" A"`, `"(A"`, `"**A"`, `"A)"`), else None."""
    match = _LETTER_TOKEN.match(token)
    return match[1] if match and match[1] in letters else None


@dataclass
class LetterReading:
    """The letter distribution read from one response."""

    letter_probs: dict[str, float] | None  # None: no letter among the answer token's top-k
    letter_mass: float  # probability on the letters before renormalising
    token_index: int | None  # position of the answer token in the generated tokens
    entry: dict[str, Any] | None  # that token's logprobs entry, as the server sent it
    problem: str | None = None


class LogprobsError(ValueError):
    """A logprobs structure that is not what the protocol says; the message names the field."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or value > 1e-6:
        raise LogprobsError(f"{where}: logprob must be a number <= 0, got {value!r}")
    return float(value)


def _checked(content: Any) -> list[dict[str, Any]]:
    """`choices[0].logprobs.content`, checked: a list of {token: str, logprob, top_logprobs}."""
    if not isinstance(content, list):
        raise LogprobsError("logprobs.content: expected a list of tokens")
    for i, entry in enumerate(content):
        where = f"logprobs.content[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise LogprobsError(f"{where}: expected an object with a string 'token'")
        _number(entry.get("logprob"), f"{where}.logprob")
        top = entry.get("top_logprobs")
        if not isinstance(top, list):
            raise LogprobsError(f"{where}.top_logprobs: expected a list")
        for j, alt in enumerate(top):
            if not isinstance(alt, dict) or not isinstance(alt.get("token"), str):
                raise LogprobsError(f"{where}.top_logprobs[{j}]: expected an object with a "
                                    "string 'token'")
            _number(alt.get("logprob"), f"{where}.top_logprobs[{j}].logprob")
    return content


def read_letter_probs(content: Any, letters: str) -> LetterReading:
    """The letter distribution at the answer token of `choices[0].logprobs.content`."""
    if content is None:
        return LetterReading(None, 0.0, None, None, "the response has no logprobs")
    content = _checked(content)
    if not content:
        return LetterReading(None, 0.0, None, None, "the response has no generated tokens")
    index = next((i for i, e in enumerate(content) if token_letter(e["token"], letters)), 0)
    entry = content[index]
    mass = dict.fromkeys(letters, 0.0)
    for alt in entry["top_logprobs"]:
        letter = token_letter(alt["token"], letters)
        if letter:
            mass[letter] += math.exp(alt["logprob"])
    total = sum(mass.values())
    if total <= 0:
        return LetterReading(None, 0.0, index, entry,
                             f"no option letter among the top {len(entry['top_logprobs'])} "
                             f"tokens at token {index}")
    return LetterReading({k: v / total for k, v in mass.items()}, min(total, 1.0), index, entry)


def argmax_letter(letter_probs: dict[str, float], letters: str) -> str:
    """The most probable letter; ties go to the letter listed first."""
    return max(letters, key=lambda k: (letter_probs.get(k, 0.0), -letters.index(k)))
