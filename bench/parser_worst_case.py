"""Worst-case parse time on adversarial responses of 10 KB, 100 KB and 1 MB.

    python bench/parser_worst_case.py

Each input is built to provoke a slow path (repeated or unclosed tags, a run of letters, nested
brackets, one line without spaces, many answer frames, option texts or question headers, LaTeX,
number and formula options mentioned over and over).
Prints, per size, the slowest input and its time (CPU time of this process, best of 3 runs, so
that other jobs on a shared machine do not blur it), and the time per KB relative to 10 KB: a
parser that is linear, or bounded, keeps that ratio at or below 1. 24 KB is the longest response
read whole; a longer one is read by its opening and conclusion. The target is 1 MB in under 50 ms.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.score.parsing import parse_answer  # noqa: E402

OPTIONS = dict(zip("ABCDEF", ["platelet", "eosinophil", "neutrophil", "immature granulocyte",
                              "basophil", "none of the above"]))
VALUES = {"A": "12", "B": "24", "C": "$48 \\mathrm{~cm}$", "D": "$\\frac{1}{3}$"}
SIZES = {"10 KB": 10_000, "24 KB": 24_000, "100 KB": 100_000, "1 MB": 1_000_000}
UNITS = {
    "repeated unclosed <think>": "<think>",
    "repeated </think> and <think>": "</think>x<think>",
    "letters A-Z": " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + " ",
    "nested brackets": "((([[[{{{",
    "one line without spaces": "abcdefghij",
    "answer frames": "Answer: B\n",
    "conflicting frames": "The answer is (A). Actually the answer is (C). ",
    "option texts": "platelet or eosinophil, not neutrophil; immature granulocyte? basophil. ",
    "question headers": "Question: which cell?\nA) platelet\nB) eosinophil\n",
    "LaTeX fractions": "\\frac{1}{\\frac{2}{$3$}} = \\boxed{",
    "end-of-turn tokens": "</s><|im_end|>",
    "letter with glosses": "B (the granules are orange-red and",
}
# Number, unit and formula options, where every mention's sentence is examined.
VALUE_UNITS = {
    "values without a full stop": "12 24 1/3 48 cm, ",
    "values in working": "12 + 24 = 36; 1/3 × 48 cm = 16 cm. ",
}


def adversarial(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def best_of(text: str, options: dict[str, str], runs: int = 3) -> float:
    times = []
    for run in range(runs):
        variant = text[:-1] + "xyz"[run]  # a new text each run: nothing is cached across runs
        start = time.process_time()
        parse_answer(variant, options)
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    worst: dict[str, tuple[float, str]] = {}
    print(f"{'input':<32}" + "".join(f"{s:>12}" for s in SIZES))
    cases = [(name, unit, OPTIONS) for name, unit in UNITS.items()]
    cases += [(name, unit, VALUES) for name, unit in VALUE_UNITS.items()]
    for name, unit, options in cases:
        row = []
        for label, size in SIZES.items():
            seconds = best_of(adversarial(unit, size), options)
            row.append(seconds)
            if seconds > worst.get(label, (0.0, ""))[0]:
                worst[label] = (seconds, name)
        print(f"{name:<32}" + "".join(f"{1000 * s:>10.2f}ms" for s in row))
    print()
    base = worst["10 KB"][0] / 10
    for label, size in SIZES.items():
        seconds, name = worst[label]
        per_kb = seconds / (size / 1000)
        print(f"worst at {label:>6}: {1000 * seconds:7.2f} ms ({name}); time per KB "
              f"{per_kb / base:.2f}x that at 10 KB")
    ok = worst["1 MB"][0] < 0.050
    print(f"1 MB under 50 ms: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
