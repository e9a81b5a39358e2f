"""How often three ways of scoring read the labelled corpus the way its responses committed.

    python bench/parser_table.py            # grouped table (the one in README.md)
    python bench/parser_table.py --styles   # one row per style

A scorer reads a response right when, whichever option were the gold one, it would mark the
response correct exactly when that option is the one the response committed to (and never when
it committed to none). Compared: ubench's parser, the official uBench scorer
(`harness.score.scoring.official_correct`), and a first-capital-letter regex that takes the first
standalone option letter in the response (and nothing when there is none; it never guesses).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.score.parsing import parse_answer  # noqa: E402
from harness.score.scoring import official_correct  # noqa: E402

CORPUS = ROOT / "tests" / "parser_corpus.jsonl"
GROUPS = {
    "bare letter: `B`, `**B**`, `\\boxed{B}`, `b`": ("lone_letter", "wrapped_letter", "lowercase"),
    "letter with text or explanation: `B) lymphocyte`": (
        "letter_with_text", "leading_letter", "letter_text_mismatch", "letter_gloss"),
    "answer statements, chain of thought, corrections": (
        "explicit_answer", "chain_of_thought", "several_letters_one_final", "self_correction",
        "chinese", "letter_in_words", "other_language"),
    "option text, article \"A\", rejected alternatives, hedges": (
        "option_text", "none_of_the_above", "article_a", "rejected_alternative",
        "hedged_option_text"),
    "values: LaTeX, units, letters or numbers as options, working": (
        "normalised_value", "letter_options", "working_not_answer"),
    "`<think>`, template tokens, echoed prompt, new question": (
        "think_block", "template_tokens", "echoed_prompt", "continues_generating"),
    "no single answer: two letters, refusal, empty": (
        "multiple_answers", "out_of_range", "refusal", "empty", "no_answer", "no_single_answer"),
}
SCORERS = ("ubench parser", "official μ-Bench scorer", "first capital letter")


def first_capital_letter(response: str, options: dict[str, str]) -> str | None:
    m = re.search(rf"\b([{''.join(options)}])\b", response)
    return m.group(1) if m else None


def reads_right(row: dict) -> dict[str, bool]:
    """Per scorer: is every possible gold letter scored as the committed letter deserves?"""
    response, options, label = row["response"], row["options"], row["label"]
    return {
        "ubench parser": parse_answer(response, options).letter == label,
        "official μ-Bench scorer": all(
            official_correct(response, letter, text) == (letter == label)
            for letter, text in options.items()),
        "first capital letter": first_capital_letter(response, options) == label,
    }


def table(rows: list[dict], by_style: bool) -> str:
    group_of = {style: name for name, styles in GROUPS.items() for style in styles}
    results: dict[str, list[dict[str, bool]]] = defaultdict(list)
    for row in rows:
        key = row["style"] if by_style else group_of[row["style"]]
        results[key].append(reads_right(row))
        results["all responses"].append(results[key][-1])
    lines = ["| responses | n | " + " | ".join(SCORERS) + " |", "|---|---|" + "---|" * len(SCORERS)]
    for key in [*sorted(k for k in results if k != "all responses"), "all responses"] if by_style \
            else [*GROUPS, "all responses"]:
        hits = results[key]
        cells = [f"{100 * sum(h[s] for h in hits) / len(hits):.1f}%" for s in SCORERS]
        name = f"**{key}**" if key == "all responses" else key
        lines.append(f"| {name} | {len(hits)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", action="store_true", help="one row per style")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.corpus.read_text(encoding="utf-8").splitlines()]
    print(table(rows, args.styles))


if __name__ == "__main__":
    main()
