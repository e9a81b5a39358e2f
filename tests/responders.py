"""Test-server responders that know the bundled sample's answers, whatever the option order."""
from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

from harness.data.images import encode_image
from harness.data.items import iter_examples
from harness.data.sources import iter_rows, resolve_source
from harness.servers.testserver import prompt_parts

_OPTION = re.compile(r"^\(?([A-H])\)\s(.*)$", re.M)
UNSURE = "I am not sure."


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def sample_oracle(wrong_every: int = 0, invalid_every: int = 0) -> Callable[[dict[str, Any]], str]:
    """Answer the gold letter of each sample question, found by its option *text*, so the answer
    follows the gold option through shuffles and rotations.

    Every `wrong_every`-th question (by a hash of image and question, the same whatever the option
    order) gets a wrong letter, and every `invalid_every`-th an answer that commits to nothing.
    """
    gold: dict[tuple[str, str], str] = {}
    for example in iter_examples(iter_rows(resolve_source("sample")), include_excluded=True):
        image = hashlib.sha256(encode_image(example.image_bytes).data_url.encode()).hexdigest()
        for item in example.items:
            gold[(image, item.question)] = item.options[item.gold_index]

    def respond(body: dict[str, Any]) -> str:
        text, url = prompt_parts(body)
        image = hashlib.sha256((url or "").encode()).hexdigest()
        question = max((q for (img, q) in gold if img == image and q in text), key=len)
        options = dict(_OPTION.findall(text))
        right = next(letter for letter, option in options.items()
                     if option == gold[(image, question)])
        h = _digest(f"{image}:{question}")
        if invalid_every and h % invalid_every == 0:
            return UNSURE
        if wrong_every and (h >> 16) % wrong_every == 0:
            return next(letter for letter in options if letter != right)
        return right
    return respond


# Token spellings a letter is given in by `letter_distribution`, as real tokenizers produce them.
LETTER_FORMS = ("{}", " {}", "({}")


def letter_distribution(seed: int = 0, preamble_every: int = 0):
    """A known token distribution for every sample question, for `logprobs` requests.

    Each letter gets a random weight, the gold letter (found as `sample_oracle` finds it) an extra
    one, so confidence means something; letters are spelled `A`, ` B`, `(C`, … and the first letter
    also as ` A` (two tokens, summed); `The` and a newline hold some mass off the letters. Every
    `preamble_every`-th question first generates a non-letter token (`Answer`), so the answer is the
    second token; every 11th puts most of its mass on non-letter tokens.
    """
    oracle = sample_oracle()

    def distribution(body: dict[str, Any]):
        text, url = prompt_parts(body)
        options = dict(_OPTION.findall(text))
        gold = oracle(body)
        h = _digest(f"{seed}:{text}:{hashlib.sha256((url or '').encode()).hexdigest()}")
        weights = {}
        for i, letter in enumerate(options):
            weights[LETTER_FORMS[i % 3].format(letter)] = ((h >> (8 * i)) % 97 + 1) / 97
        first = next(iter(options))
        weights[f" {first}"] = weights.get(f" {first}", 0) + ((h >> 80) % 13) / 97
        gold_token = next(t for t in weights if t.strip(" (") == gold)
        weights[gold_token] += ((h >> 96) % 5) / 2
        weights["The"] = ((h >> 112) % 29) / 97
        weights["\n"] = 0.01
        if h % 11 == 0:  # a model that starts to ramble: the letters lose most of their mass
            weights.update({"The": 5.0, "I": 4.0, "\n": 3.0})
        total = sum(weights.values())
        dist = {t: w / total for t, w in weights.items() if w > 0}
        if preamble_every and h % preamble_every == 0:
            return [{"Answer": 0.7, "The": 0.3}, dist]
        return dist
    return distribution


def failing_stains(oracle: Callable[[dict], str]) -> Callable[[dict], str]:
    """`oracle`, except that every stain question fails (the test server answers HTTP 500)."""
    def respond(body: dict) -> str:
        if "Which stain or contrast agent" in body["messages"][0]["content"][1]["text"]:
            raise RuntimeError("boom")
        return oracle(body)
    return respond
