"""`ubench extract`: read the answers in anyone's outputs with the project's parser.

Each input line is a JSON object with at least `response` (text) and `options` (`{"A": text, ...}`
or a list of texts, lettered A, B, ...); an optional `gold` letter adds `correct`. Each output line
is the input line plus `extracted` and `rule`. A malformed line becomes `{"line": n, "error": ...,
"text": the original line}` and the run goes on, so one bad record never loses the others.
"""
from __future__ import annotations

import json
import os
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.score.parsing import INVALID_PREFIX, parse_answer

LETTERS = string.ascii_uppercase


class ExtractError(Exception):
    """The input file as a whole cannot be read, or the output cannot be written."""


@dataclass
class ExtractStats:
    lines: int = 0
    errors: int = 0
    rules: Counter = field(default_factory=Counter)
    correct_by_rule: Counter = field(default_factory=Counter)
    graded_by_rule: Counter = field(default_factory=Counter)

    @property
    def parsed(self) -> int:
        return sum(self.rules.values())

    @property
    def invalid(self) -> int:
        return sum(n for rule, n in self.rules.items() if rule.startswith(INVALID_PREFIX))


def option_map(value: Any) -> dict[str, str]:
    """`{"A": text}` or `[text, ...]` → letter → text; ValueError says what is wrong."""
    if isinstance(value, list):
        if len(value) > len(LETTERS):
            raise ValueError(f"field 'options' has {len(value)} entries; at most {len(LETTERS)}")
        value = dict(zip(LETTERS, value))
    elif isinstance(value, dict):
        value = {str(k).strip().upper(): v for k, v in value.items()}
        bad = [k for k in value if len(k) != 1 or k not in LETTERS]
        if bad:
            raise ValueError(f"field 'options' has keys {bad!r}; keys must be letters A-Z")
    else:
        raise ValueError(f"field 'options' must be an object or a list, got {_kind(value)}")
    if not value:
        raise ValueError("field 'options' is empty")
    texts = [k for k, v in value.items() if not isinstance(v, str)]
    if texts:
        raise ValueError(f"field 'options': option {texts[0]} is not a string")
    return value


def extract_record(record: Any) -> dict[str, Any]:
    """The record plus `extracted`, `rule` (and `correct` when it has a `gold` letter)."""
    if not isinstance(record, dict):
        raise ValueError(f"line is not a JSON object but {_kind(record)}")
    if "response" not in record:
        raise ValueError("missing field 'response'")
    if not isinstance(record["response"], str):
        raise ValueError(f"field 'response' must be a string, got {_kind(record['response'])}")
    if "options" not in record:
        raise ValueError("missing field 'options'")
    options = option_map(record["options"])
    gold = record.get("gold")
    if gold is not None and gold not in options:
        raise ValueError(f"field 'gold' is {gold!r}, not one of the option letters "
                         f"{''.join(options)}")
    extraction = parse_answer(record["response"], options)
    out = {**record, "extracted": extraction.letter, "rule": extraction.rule}
    if gold is not None:
        out["correct"] = extraction.letter == gold
    return out


def extract_file(source: Path, target: Path) -> ExtractStats:
    """Parse every line of `source` into `target` (written whole, then renamed into place)."""
    source, target = Path(source), Path(target)
    stats = ExtractStats()
    tmp = target.with_name(target.name + ".tmp")
    try:
        reader = open(source, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ExtractError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with reader, open(tmp, "w", encoding="utf-8") as writer:
            for number, line in enumerate(reader, 1):
                if not line.strip():
                    continue
                stats.lines += 1
                out = _extract_line(number, line, stats)
                writer.write(json.dumps(out, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExtractError(f"cannot extract {source} into {target}: {exc}") from None
    return stats


def _extract_line(number: int, line: str, stats: ExtractStats) -> dict[str, Any]:
    try:
        out = extract_record(json.loads(line))
    except (json.JSONDecodeError, ValueError) as exc:
        stats.errors += 1
        reason = f"not valid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        return {"line": number, "error": reason, "text": line.rstrip("\n")}
    stats.rules[out["rule"]] += 1
    if "correct" in out:
        stats.graded_by_rule[out["rule"]] += 1
        stats.correct_by_rule[out["rule"]] += out["correct"]
    return out


def summary_text(stats: ExtractStats, target: Path) -> str:
    """Counts per rule, the invalid rate, and accuracy where the input had `gold` letters."""
    rate = f"{100 * stats.invalid / stats.parsed:.1f}%" if stats.parsed else "–"
    lines = [f"{stats.lines} lines: {stats.parsed} parsed, {stats.errors} malformed "
             f"(see 'error' in the output); invalid rate {rate}", "",
             "| rule | n | accuracy |", "|---|---|---|"]
    for rule, n in stats.rules.most_common():
        graded = stats.graded_by_rule[rule]
        acc = f"{100 * stats.correct_by_rule[rule] / graded:.1f}%" if graded else "–"
        lines.append(f"| {rule} | {n} | {acc} |")
    graded = sum(stats.graded_by_rule.values())
    if graded:
        lines += ["", f"accuracy over {graded} lines with a gold letter: "
                      f"{100 * sum(stats.correct_by_rule.values()) / graded:.1f}%"]
    lines += ["", f"Written to {target}"]
    return "\n".join(lines)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
