"""Read the letter a response committed to: an ordered cascade of named rules, else *invalid*.

Each rule is a small function `(text, options) -> letter | None | Invalid`. The first rule that
decides wins, and its name goes into the record, so every score can be audited. Nothing here ever
guesses: a response that commits to nothing is invalid, with the reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

INVALID_PREFIX = "invalid:"


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    rule: str  # the rule that decided, or "invalid:<reason>"

    @property
    def valid(self) -> bool:
        return self.letter is not None


@dataclass(frozen=True)
class Invalid:
    reason: str


_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_CHAT_TOKENS = re.compile(r"</s>|<s>|<\|im_end\|>|<\|im_start\|>(assistant)?|<\|endoftext\|>|"
                          r"<\|eot_id\|>|<end_of_turn>|<\|end\|>|<\|assistant\|>")
_WRAP = r"[\s\*_`\"'\(\)\[\]\{\}\$\\]*"
_LETTER = r"(?:\\boxed\{|\\text\{|\\mathrm\{)?(?-i:([A-Z]))\}?"

_FINAL_ANSWER = re.compile(
    r"(?:\b(?:final\s+)?answer\s*(?:is|:|=|-)?\s*(?:option\s*)?"
    r"|\bcorrect\s+(?:answer|option|choice)\s*(?:is|:|=)?\s*(?:option\s*)?"
    r"|\b(?:I\s+)?(?:choose|select|pick)\s*(?:option\s*)?"
    r"|答案\s*(?:是|为|：|:)?\s*(?:选项)?"
    r"|选\s*)"
    + _WRAP + _LETTER + r"(?![A-Za-z0-9])",
    re.I,
)
_LONE = re.compile(r"^" + _WRAP + r"(?:option\s*)?(?:\\boxed\{|\\text\{)?([A-Za-z])\}?" + r"[\s\*_`\"'\)\]\}\$\.:]*$", re.I)
_LEADING_LETTER = re.compile(r"^" + _WRAP + r"([A-H])\s*[\)\.:\]]\s*(.+)$", re.S)
_REFUSAL = re.compile(
    r"\b(cannot|can't|can not|unable to|not possible to|impossible to)\s+(determine|tell|answer|"
    r"identify|say)|\bI'm sorry\b|\bI am sorry\b|\bas an AI\b", re.I)


def clean(response: str) -> str:
    """Remove reasoning blocks and chat-template tokens; the raw response is kept elsewhere."""
    text = _THINK.sub(" ", response)
    text = _CHAT_TOKENS.sub(" ", text)
    return text.strip()


def normalize(text: str) -> str:
    text = text.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def rule_final_answer(text: str, options: Mapping[str, str]) -> "str | Invalid | None":
    """Explicit commitments ("ANSWER: B", "the answer is (B)"); the last one wins."""
    letters = [m.group(1) for m in _FINAL_ANSWER.finditer(text)]
    if not letters:
        return None
    last = letters[-1]
    if last not in options:
        return Invalid(f"letter_out_of_range({last})")
    return last


def rule_lone_letter(text: str, options: Mapping[str, str]) -> "str | Invalid | None":
    """The whole response is one letter, optionally wrapped: `(B)`, `B.`, `**B**`, `$B$`."""
    m = _LONE.match(text)
    if not m:
        return None
    letter = m.group(1).upper()
    return letter if letter in options else Invalid(f"letter_out_of_range({letter})")


def rule_letter_with_text(text: str, options: Mapping[str, str]) -> "str | Invalid | None":
    """A letter followed by its own option text: "B. Lymphocyte", "(B) lymphocyte"."""
    m = _LEADING_LETTER.match(text)
    if not m or m.group(1) not in options:
        return None
    head = normalize(m.group(2).splitlines()[0])
    opt = normalize(options[m.group(1)])
    return m.group(1) if opt and head.startswith(opt) else None


def rule_option_text(text: str, options: Mapping[str, str]) -> "str | Invalid | None":
    """The option text alone (normalised); the longest option found wins if it is unique."""
    norm = f" {normalize(text)} "
    found = [(len(normalize(t)), letter) for letter, t in options.items()
             if normalize(t) and f" {normalize(t)} " in norm]
    if not found:
        return None
    found.sort(reverse=True)
    longest = [l for n, l in found if n == found[0][0]]
    # Shorter matches contained in the longest one ("cell" in "stem cell") do not compete.
    competitors = [l for n, l in found
                   if l not in longest and normalize(options[l]) not in normalize(
                       options[longest[0]])]
    if len(longest) == 1 and not competitors:
        return longest[0]
    return Invalid("ambiguous_option_text")


def rule_refusal(text: str, options: Mapping[str, str]) -> "str | Invalid | None":
    return Invalid("refusal") if _REFUSAL.search(text) else None


RULES: tuple[tuple[str, Callable[[str, Mapping[str, str]], "str | Invalid | None"]], ...] = (
    ("final_answer", rule_final_answer),
    ("lone_letter", rule_lone_letter),
    ("letter_with_text", rule_letter_with_text),
    ("refusal", rule_refusal),
    ("option_text", rule_option_text),
)


def parse_answer(response: str | None, options: Mapping[str, str]) -> Extraction:
    """The letter `response` committed to among `options` (letter → text), or invalid."""
    text = clean(response or "")
    if not text:
        return Extraction(None, INVALID_PREFIX + "empty")
    for name, rule in RULES:
        result = rule(text, options)
        if isinstance(result, Invalid):
            return Extraction(None, INVALID_PREFIX + result.reason)
        if result is not None:
            return Extraction(result, name)
    return Extraction(None, INVALID_PREFIX + "no_answer")
