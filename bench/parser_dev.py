"""Score the parser on the development half of the real-response corpus (../shared/parser-dev).

    python bench/parser_dev.py            # agreement, confusion, agreement per style
    python bench/parser_dev.py --misread  # and every misread record, grouped by the rule that fired

`gold` is the letter the response committed to, or "none"; an invalid reading agrees with "none".
The other half of the corpus is held out and measured separately: fix classes, never strings.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.report.markdown import md_table  # noqa: E402
from harness.score.extract import NO_ANSWER, agrees  # noqa: E402
from harness.score.parsing import parse_answer  # noqa: E402

DEV = ROOT.parent / "shared" / "parser-dev" / "responses.jsonl"


def score(rows: list[dict]) -> list[tuple[dict, str | None, str]]:
    """(row, extracted letter, rule) for each row."""
    out = []
    for row in rows:
        got = parse_answer(row["response"], row["options"])
        out.append((row, got.letter, got.rule))
    return out


def report(scored: list[tuple[dict, str | None, str]], misread: bool) -> str:
    n = len(scored)
    ok = sum(agrees(letter, row["gold"]) for row, letter, _ in scored)
    none_to_letter = sum(row["gold"] == NO_ANSWER and letter is not None
                         for row, letter, _ in scored)
    lines = [f"agreement {ok}/{n} = {100 * ok / n:.2f}%; none → letter {none_to_letter}", "",
             "confusion (gold → extracted, misreads only):"]
    confusion = Counter((row["gold"], letter or NO_ANSWER) for row, letter, _ in scored
                        if not agrees(letter, row["gold"]))
    lines += [f"  {gold} → {got}: {count}" for (gold, got), count in sorted(confusion.items())]
    by_style: dict[str, list[bool]] = defaultdict(list)
    for row, letter, _ in scored:
        for style in row.get("style", []):
            by_style[style].append(agrees(letter, row["gold"]))
    lines += ["", *md_table(["style (dev tag)", "n", "agreement"],
                            ([style, len(oks), f"{100 * sum(oks) / len(oks):.1f}%"]
                             for style, oks in sorted(by_style.items(), key=lambda kv: -len(kv[1]))))]
    if misread:
        by_rule = defaultdict(list)
        for row, letter, rule in scored:
            if not agrees(letter, row["gold"]):
                by_rule[rule].append((row, letter))
        for rule, items in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
            lines += ["", f"== {rule}: {len(items)}"]
            for row, letter in items:
                tail = row["response"][-300:]
                lines.append(f"  {row['id']} gold={row['gold']} got={letter or NO_ANSWER} "
                             f"options={json.dumps(row['options'], ensure_ascii=False)[:200]}\n"
                             f"    …{json.dumps(tail, ensure_ascii=False)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEV)
    parser.add_argument("--misread", action="store_true", help="list every misread record")
    args = parser.parse_args()
    if not args.input.exists():
        sys.exit(f"{args.input}: not found (the development half lives in shared/, beside the "
                 "checkout, and is never committed)")
    rows = [json.loads(line) for line in args.input.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    print(report(score(rows), args.misread))


if __name__ == "__main__":
    main()
