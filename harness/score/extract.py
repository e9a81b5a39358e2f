"""`ubench extract`: read the answers in anyone's outputs with the project's parser.

Each input line is a JSON object with at least `response` (text) and `options` (`{"A": text, ...}`
or a list of texts, lettered A, B, ...); an optional `gold` (a letter, or "none" for a response
that committed to no option) adds `correct`, and an optional `question` is shown to the judge.
Each output line is the input line plus `extracted` and `rule`. A malformed line becomes
`{"line": n, "error": ..., "text": the original line}` and the run goes on, so one bad record
never loses the others, except a line with a `schema_version` newer than this harness reads (a
samples.jsonl of a later harness, whose fields may mean something else): that stops it, and
nothing is written. With a judge, the lines the rules leave invalid are asked about, a chunk of
lines at a time, through the response cache; each asked line keeps the judge's `usage` as sent,
and the summary sums it (priced by the shipped table).
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from harness.atomic import replaced_atomically
from harness.data.items import LETTERS
from harness.report.markdown import md_table
from harness.report.schema import NewerSchemaError, check_version
from harness.run.cache import ResponseCache
from harness.score.judge import RULE as JUDGE_RULE
from harness.score.judge import Judge, needs_judge
from harness.score.parsing import INVALID_PREFIX, parse_answer
from harness.score.pricing import find_price, load_table
from harness.score.usage import judge_usage, judge_usage_text

NO_ANSWER = "none"  # a `gold` saying the response committed to no option
CHUNK = 64  # lines read, parsed and judged together


class ExtractError(Exception):
    """The input file as a whole cannot be read, or the output cannot be written."""


@dataclass
class ExtractStats:
    """What `ubench extract` counts while it rescans a run: per rule, how often and how well."""
    lines: int = 0
    errors: int = 0
    rules: Counter = field(default_factory=Counter)
    correct_by_rule: Counter = field(default_factory=Counter)
    graded_by_rule: Counter = field(default_factory=Counter)
    misreads: Counter = field(default_factory=Counter)  # "none → letter", ... against `gold`
    judge_asked: int = 0
    judge_errors: int = 0
    judge_calls: list = field(default_factory=list)  # each asked line's `judge`, for its usage
    correct_before_judge: int = 0

    @property
    def parsed(self) -> int:
        """Responses the parser read, valid or not."""
        return sum(self.rules.values())

    @property
    def invalid(self) -> int:
        """Responses the parser found invalid."""
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
    """The record plus `extracted`, `rule` (and `correct` when it has a `gold`)."""
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
    if gold is not None and gold not in options and gold != NO_ANSWER:
        raise ValueError(f"field 'gold' is {gold!r}, not one of the option letters "
                         f"{''.join(options)} nor {NO_ANSWER!r}")
    if not isinstance(record.get("question", ""), str):
        raise ValueError(f"field 'question' must be a string, got {_kind(record['question'])}")
    extraction = parse_answer(record["response"], options)
    out = {**record, "extracted": extraction.letter, "rule": extraction.rule}
    if gold is not None:
        out["correct"] = agrees(extraction.letter, gold)
    return out


def agrees(extracted: str | None, gold: str) -> bool:
    """A letter agrees with the same letter; an invalid reading agrees with "none"."""
    return extracted == (None if gold == NO_ANSWER else gold)


def extract_file(source: Path, target: Path, judge: Judge | None = None) -> ExtractStats:
    """Parse every line of `source` into `target` (written whole, then renamed into place); with
    a `judge`, ask it about the lines the rules leave invalid."""
    source, target = Path(source), Path(target)
    stats = ExtractStats()
    try:
        reader = open(source, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ExtractError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with reader, replaced_atomically(target) as tmp, \
                open(tmp, "w", encoding="utf-8") as writer:
            asyncio.run(_extract_lines(reader, writer, stats, judge))
    except OSError as exc:
        raise ExtractError(f"cannot extract {source} into {target}: {exc}") from None
    return stats


async def _extract_lines(reader, writer, stats: ExtractStats, judge: Judge | None) -> None:
    cache = ResponseCache() if judge else None
    if judge and cache:
        judge.use_cache(cache)
    try:
        for chunk in _chunks(enumerate(reader, 1)):
            outs = [_extract_line(f"{reader.name}:{number}", number, line, stats)
                    for number, line in chunk if line.strip()]
            parsed = [out for out, ok in outs if ok]
            stats.correct_before_judge += sum(bool(out.get("correct")) for out in parsed)
            if judge:
                await asyncio.gather(*(_judge_line(judge, out, stats) for out in parsed))
            for out in parsed:
                _count(out, stats)
            for out, _ in outs:
                writer.write(json.dumps(out, ensure_ascii=False) + "\n")
    finally:
        if judge:
            await judge.aclose()
        if cache is not None:
            cache.close()


def _chunks(lines: Iterator[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    while chunk := list(islice(lines, CHUNK)):
        yield chunk


def _extract_line(where: str, number: int, line: str,
                  stats: ExtractStats) -> tuple[dict[str, Any], bool]:
    """(output line, whether it was parsed). A samples.jsonl line of a newer format than this
    harness reads stops the extraction (NewerSchemaError): its fields may mean something else."""
    stats.lines += 1
    try:
        data = json.loads(line)
        if isinstance(data, dict) and "schema_version" in data:
            check_version(data, where)
        return extract_record(data), True
    except NewerSchemaError:
        raise
    except (json.JSONDecodeError, ValueError) as exc:
        stats.errors += 1
        reason = f"not valid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        return {"line": number, "error": reason, "text": line.rstrip("\n")}, False


async def _judge_line(judge: Judge, out: dict[str, Any], stats: ExtractStats) -> None:
    if not needs_judge(out["rule"]):
        return
    verdict = await judge.verdict(str(out.get("item_id", out.get("id", ""))),
                                  out.get("question", ""), option_map(out["options"]),
                                  out["response"])
    out.update(verdict.updates(out["rule"], out.get("gold"), "gold" in out))
    stats.judge_asked += 1
    stats.judge_errors += "error" in out["judge"]
    stats.judge_calls.append(out["judge"])


def _count(out: dict[str, Any], stats: ExtractStats) -> None:
    stats.rules[out["rule"]] += 1
    if "correct" in out:
        stats.graded_by_rule[out["rule"]] += 1
        stats.correct_by_rule[out["rule"]] += out["correct"]
        if not out["correct"]:
            stats.misreads[_misread(out["gold"], out["extracted"])] += 1


def _misread(gold: str, extracted: str | None) -> str:
    if gold == NO_ANSWER:
        return "none → letter"
    return "letter → none" if extracted is None else "letter → another letter"


def summary_text(stats: ExtractStats, target: Path) -> str:
    """Counts per rule, the invalid rate, and agreement with `gold` where the input has one."""
    rate = f"{100 * stats.invalid / stats.parsed:.1f}%" if stats.parsed else "–"
    rows = []
    for rule, n in stats.rules.most_common():
        graded = stats.graded_by_rule[rule]
        rows.append([rule, n, f"{100 * stats.correct_by_rule[rule] / graded:.1f}%" if graded
                     else "–"])
    lines = [f"{stats.lines} lines: {stats.parsed} parsed, {stats.errors} malformed "
             f"(see 'error' in the output); invalid rate {rate}", "",
             *md_table(["rule", "n", "agrees with gold"], rows)]
    graded = sum(stats.graded_by_rule.values())
    if graded:
        agreed = sum(stats.correct_by_rule.values())
        misreads = ", ".join(f"{kind} {stats.misreads[kind]}" for kind in (
            "none → letter", "letter → none", "letter → another letter"))
        lines += ["", f"agreement with 'gold' over {graded} lines: {100 * agreed / graded:.2f}% "
                      f"({agreed}/{graded}; the accuracy when 'gold' is the correct letter); "
                      f"misread: {misreads}"]
        if stats.judge_asked:
            lines.append(f"without the judge: {100 * stats.correct_before_judge / graded:.2f}%")
    if stats.judge_asked:
        decided = stats.rules[JUDGE_RULE]
        lines.append(f"judge: asked about {stats.judge_asked} invalid lines, decided {decided}, "
                     f"{stats.judge_errors} failed")
        model = stats.judge_calls[0]["model"]
        judged = judge_usage(stats.judge_calls, find_price(model, load_table()))
        lines.append(f"judge usage: {judge_usage_text(judged)}")
    lines += ["", f"Written to {target}"]
    return "\n".join(lines)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
