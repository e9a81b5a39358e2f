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
