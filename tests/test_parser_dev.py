"""The parser on real responses it was not written against: the development half of the corpus
of real VLM responses read by a person (../shared/parser-dev, beside the checkout, never
committed), scored the way a user would, with `ubench extract`."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from tests.conftest import read_jsonl, ubench

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "parser-dev" / "responses.jsonl"
MIN_AGREEMENT = 0.985
MAX_NONE_TO_LETTER = 1


def test_parser_agrees_with_the_person_on_the_development_half(tmp_path, capsys):
    assert DEV.exists(), (
        f"{DEV} is missing: the development half of the parser corpus lives in shared/ beside "
        "the checkout (../shared/parser-dev/responses.jsonl); copy it there to run this test")
    target = tmp_path / "dev.jsonl"
    proc = ubench("extract", "--input", str(DEV), "--output", str(target))
    out = read_jsonl(target)
    assert out and not any("error" in o and "line" in o for o in out)
    agreed = [o["correct"] for o in out]
    none_to_letter = [o["id"] for o in out if o["gold"] == "none" and o["extracted"]]
    per_style: dict[str, list[bool]] = defaultdict(list)
    for o in out:
        for style in o["style"]:
            per_style[style].append(o["correct"])
    with capsys.disabled():
        print(f"\nParser on the development half: {sum(agreed)}/{len(agreed)} agree, "
              f"none → letter {len(none_to_letter)}")
        for style, oks in sorted(per_style.items(), key=lambda kv: -len(kv[1])):
            print(f"  {style:<40}{len(oks):>5}{100 * sum(oks) / len(oks):>8.1f}%")
    misread = "\n".join(f"{o['id']}: gold {o['gold']}, read {o['extracted']} ({o['rule']})"
                        for o in out if not o["correct"])
    assert sum(agreed) / len(agreed) >= MIN_AGREEMENT, misread
    assert len(none_to_letter) <= MAX_NONE_TO_LETTER, none_to_letter
    # What `ubench extract` prints is what the file says: counts per rule and the agreement.
    assert re.search(r"\| final_answer \| \d+ \| \d+\.\d% \|", proc.stdout)
    assert (f"agreement with 'gold' over {len(out)} lines: "
            f"{100 * sum(agreed) / len(agreed):.2f}%") in proc.stdout
    assert f"none → letter {len(none_to_letter)}" in proc.stdout
