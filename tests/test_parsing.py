"""The answer parser: each rule on its own, the cleaning steps, and the labelled corpus."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from harness.score.parsing import (
    INVALID_PREFIX,
    MAX_READ,
    Invalid,
    _decide,
    clean,
    parse_answer,
    plain,
    rule_final_answer,
    rule_leading_letter,
    rule_letter_with_text,
    rule_lone_letter,
    rule_option_text,
)

CORPUS = Path(__file__).with_name("parser_corpus.jsonl")

BLOOD = dict(zip("ABCDEF", ["platelet", "eosinophil", "neutrophil", "immature granulocyte",
                            "basophil", "none of the above"]))
PHASE = dict(zip("ABCDEF", ["G1", "S", "G2", "metaphase", "anaphase", "none of the above"]))
WORMS = dict(zip("ABCDE", ["zebrafish", "yeast", "platynereis", "C. elegans", "none of the above"]))
HELD = dict(zip("ABCDEF", ["prometaphase", "metaphase", "early anaphase", "anaphase", "interphase",
                           "none of the above"]))


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


# --- the corpus -----------------------------------------------------------------------------------


def test_corpus_is_large_labelled_and_covers_every_style():
    rows = load_corpus()
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "style", "options", "response", "label"}, r["id"]
        assert r["label"] is None or r["label"] in r["options"], r["id"]
    styles = {r["style"] for r in rows}
    expected = {"lone_letter", "wrapped_letter", "lowercase", "letter_with_text", "leading_letter",
                "explicit_answer", "chain_of_thought", "several_letters_one_final",
                "self_correction", "multiple_answers", "none_of_the_above", "option_text",
                "article_a", "rejected_alternative", "chinese", "continues_generating",
                "echoed_prompt", "template_tokens", "think_block", "out_of_range", "refusal",
                "empty", "no_answer", "letter_text_mismatch",
                # the classes of real responses the parser once misread (issue 12)
                "letter_gloss", "letter_in_words", "other_language", "normalised_value",
                "letter_options", "working_not_answer", "no_single_answer"}
    assert expected <= styles
    assert sum(r["label"] is None for r in rows) >= 50  # the parser must be able to say "none"


def test_corpus_accuracy_per_style(capsys):
    per_style: dict[str, list[bool]] = defaultdict(list)
    misses = []
    for r in load_corpus():
        got = parse_answer(r["response"], r["options"])
        ok = got.letter == r["label"]
        per_style[r["style"]].append(ok)
        if not ok:
            misses.append(f"{r['id']}: want {r['label']}, got {got.letter} ({got.rule}): "
                          f"{r['response'][:80]!r}")
    total = [ok for oks in per_style.values() for ok in oks]
    lines = [f"{'style':<28}{'n':>5}{'accuracy':>10}"]
    lines += [f"{style:<28}{len(oks):>5}{100 * sum(oks) / len(oks):>9.1f}%"
              for style, oks in sorted(per_style.items())]
    lines.append(f"{'overall':<28}{len(total):>5}{100 * sum(total) / len(total):>9.1f}%")
    table = "\n".join(lines)
    with capsys.disabled():
        print("\nParser accuracy on the labelled corpus\n" + table)
    # A regression floor: every style, old and new, is read right in full.
    assert not misses, table + "\n\nMisread:\n" + "\n".join(misses)


# --- rule 1: explicit statements ------------------------------------------------------------------


@pytest.mark.parametrize("text, letter", [
    ("ANSWER: C", "C"),
    ("The answer is (B).", "B"),
    ("the correct option: D", "D"),
    ("Final answer: **E**", "E"),
    ("The answer is \\boxed{A}", "A"),
    ("<answer>B</answer>", "B"),
    ("D is the correct answer.", "D"),
    ("答案是C", "C"),
    ("选E。", "E"),
    ("The answer is basophil.", "E"),          # an option text as the target
    ("The answer is a neutrophil.", "C"),      # "a" is an article, not option A
    ("The answer is A because it is tiny.", "A"),  # "A" with a connector is a letter
    ("Answer: B ... wait, actually C", "C"),   # the last commitment wins
    ("ANSWER: A\nCorrection: ANSWER: D", "D"),
])
def test_final_answer_reads_the_last_commitment(text, letter):
    assert rule_final_answer(text, BLOOD) == letter


@pytest.mark.parametrize("text, reason", [
    ("The answer is A or C.", "multiple_answers"),
    ("ANSWER: A, C", "multiple_answers"),
    ("Answer: B/D", "multiple_answers"),
    ("**Answer: C** (or possibly D)", "multiple_answers"),
    ("Answer: B\nAnswer: D", "conflicting_answers"),  # two answers, no correction between
    ("Answer: G", "letter_out_of_range(G)"),
    ("The answer is (X).", "letter_out_of_range(X)"),
    ("The answer is B) neutrophil", "letter_text_mismatch"),
])
def test_final_answer_refuses_two_answers_and_foreign_letters(text, reason):
    assert rule_final_answer(text, BLOOD) == Invalid(reason)


@pytest.mark.parametrize("text", [
    "So B cells are not involved.",      # "B cells" is not a choice
    "The answer depends on the stain.",
    "Answer with a single letter.",
])
def test_final_answer_ignores_letters_that_are_words(text):
    assert rule_final_answer(text, BLOOD) is None


def test_final_answer_takes_an_option_text_that_starts_with_a_letter():
    assert rule_final_answer("The answer is C. elegans.", WORMS) == "D"


# --- rule 2: a lone letter ------------------------------------------------------------------------


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("**B**", "B"), ("$B$", "B"),
    ("\\boxed{B}", "B"), ("[B]", "B"), ("b", "B"), ("Option C", "C"), ("> **E**", "E"),
    ("The nucleus is segmented.\n\nC", "C"),      # the last line
    ("A is wrong; E is wrong. C.", "C"),          # the last sentence
])
def test_lone_letter(text, letter):
    assert rule_lone_letter(text, BLOOD) == letter


@pytest.mark.parametrize("text, reason", [
    ("G", "letter_out_of_range(G)"), ("B and D", "multiple_answers"), ("A, B", "multiple_answers"),
    ("A\nC", "multiple_answers"),
])
def test_lone_letter_invalid(text, reason):
    assert rule_lone_letter(text, BLOOD) == Invalid(reason)


def test_a_one_letter_option_text_is_not_a_letter():
    assert rule_lone_letter("S", PHASE) is None
    assert parse_answer("S", PHASE).letter == "B"
    assert parse_answer("S", PHASE).rule == "option_text"


@pytest.mark.parametrize("options", [BLOOD, PHASE])
def test_a_bare_letter_reads_as_the_full_cascade_does(options):
    """parse_answer decides a one-letter response early; it must agree with the rules."""
    for text in [*"ABCDEFGHSZ", *"abcs", " B\n", "\tS "]:
        assert parse_answer(text, options) == _decide(clean(text, options), options), text


# --- rule 3: a letter with its option text --------------------------------------------------------


@pytest.mark.parametrize("text, letter", [
    ("B. Eosinophil", "B"), ("B) eosinophil", "B"), ("(B) eosinophil", "B"), ("b) eosinophil", "B"),
    ("**C) Neutrophil**", "C"), ("E, basophil.", "E"), ("A platelet.", "A"),
    ("The cell is small and anucleate.\n\nA) platelet", "A"),
])
def test_letter_with_text(text, letter):
    assert rule_letter_with_text(text, BLOOD) == letter


def test_letter_with_another_options_text_is_a_mismatch():
    assert rule_letter_with_text("C) eosinophil", BLOOD) == Invalid("letter_text_mismatch")


@pytest.mark.parametrize("text", [
    "A neutrophil.",                     # article + another option: not a letter
    "A) platelet: too small.\nB) eosinophil: a good match.",  # an enumeration, not an answer
])
def test_letter_with_text_leaves_articles_and_enumerations(text):
    assert rule_letter_with_text(text, BLOOD) is None


def test_letter_with_text_takes_a_letter_word_option():
    assert rule_letter_with_text("D. C. elegans", WORMS) == "D"
    assert rule_letter_with_text("C. elegans", WORMS) is None


# --- rule 4: a leading letter ---------------------------------------------------------------------


@pytest.mark.parametrize("text, letter", [
    ("B. The granules are orange-red.", "B"),
    ("C\n\nThe nucleus is segmented.", "C"),
    ("A\n\nA cell in interphase would look different.", "A"),
    ("B。这是嗜酸性粒细胞。", "B"),
])
def test_leading_letter(text, letter):
    assert rule_leading_letter(text, BLOOD) == letter


@pytest.mark.parametrize("text", ["A cell in mitosis.", "C. elegans is a worm.", "I think so."])
def test_leading_letter_needs_a_separator_and_not_an_option_text(text):
    assert rule_leading_letter(text, WORMS) is None


# --- rule 5: the option text ----------------------------------------------------------------------


@pytest.mark.parametrize("text, letter", [
    ("Immature granulocyte", "D"), ("immature-granulocyte", "D"), ("IMMATURE_GRANULOCYTE", "D"),
    ("eosinophils", "B"), ("It is a neutrophil.", "C"), ("None of the above", "F"),
    ("None of these options is correct.", "F"),
    ("It's not a neutrophil but a basophil.", "E"),
    ("Basophil rather than eosinophil.", "E"),
    ("Neutrophil is ruled out by the granules; eosinophil.", "B"),
])
def test_option_text(text, letter):
    assert rule_option_text(text, BLOOD) == letter


@pytest.mark.parametrize("text, letter", [
    ("Early anaphase", "C"), ("anaphase", "D"), ("Pro-metaphase", "A"), ("Metaphase", "B"),
])
def test_option_text_longest_match_and_spelling(text, letter):
    assert rule_option_text(text, HELD) == letter


@pytest.mark.parametrize("text", [
    "It could be an eosinophil or a basophil.",
    "Neither a neutrophil nor an eosinophil.",
    "Eosinophils have orange granules and basophils have dark ones.",
])
def test_option_text_needs_a_single_unrejected_option(text):
    assert rule_option_text(text, BLOOD) is None


def test_none_of_the_above_only_when_the_item_has_it():
    no_none = dict(zip("ABCD", ["lymphocyte", "neutrophil", "monocyte", "eosinophil"]))
    assert parse_answer("None of the above.", BLOOD).letter == "F"
    assert parse_answer("None of the above.", no_none).letter is None


# --- cleaning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, cleaned", [
    ("<think>maybe A</think>\nB", "B"),
    ("reasoning the template opened...</think>\n\nB", "B"),
    ("<think>never finished, answer A", ""),
    ("B<|im_end|>\n<|im_start|>user\nnext?<|im_end|>\n<|im_start|>assistant\nC", "B"),
    ("<s> C </s>", "C"),
    ("<start_of_turn>model\nD<end_of_turn>", "D"),
])
def test_clean_reasoning_and_template_tokens(raw, cleaned):
    assert clean(raw) == cleaned


def test_clean_drops_an_echoed_prompt_and_cuts_an_invented_question():
    echo = ("Answer with a single letter, no extra details.\nQuestion:Which cell?\nA) platelet\n"
            "B) eosinophil\nC) neutrophil\nD) immature granulocyte\nE) basophil\n"
            "F) none of the above\n")
    assert clean(echo + "C", BLOOD) == "C"
    assert clean("C\nQuestion: Which stain?\nA) Giemsa\nB) H&E\nAnswer: B", BLOOD) == "C"
    assert clean("E\n\nHuman: and this one?\nAssistant: A", BLOOD) == "E"
    # A refusal before an invented question is the answer, not an echo.
    refused = "I cannot tell.\nQuestion: Which stain?\nA) Giemsa\nB) H&E\nAnswer: B"
    assert parse_answer(refused, BLOOD).rule == INVALID_PREFIX + "refusal"


# --- the cascade ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, rule", [
    ("", "invalid:empty"), ("   ", "invalid:empty"), (None, "invalid:empty"),
    ("I'm sorry, I cannot tell from this image.", "invalid:refusal"),
    ("无法确定。", "invalid:refusal"),
    ("It could be either B or E.", "invalid:multiple_answers"),
    ("The cell is round.", "invalid:no_answer"),
    ("The cell could be an eosinophil or a basophil.", "invalid:ambiguous_option_text"),
])
def test_invalid_reasons(text, rule):
    got = parse_answer(text, BLOOD)
    assert (got.letter, got.rule) == (None, rule)


@pytest.mark.parametrize("text, rule", [
    ("ANSWER: B", "final_answer"), ("**B**", "lone_letter"), ("B) eosinophil", "letter_with_text"),
    ("B. Orange granules.", "leading_letter"), ("eosinophil", "option_text"),
])
def test_each_rule_names_itself(text, rule):
    got = parse_answer(text, BLOOD)
    assert (got.letter, got.rule) == ("B", rule)


def test_never_guesses_from_the_first_capital_letter():
    got = parse_answer("A cell in mitosis is not shown; the granules mean the answer is C.", BLOOD)
    assert got.letter == "C"


def test_readme_table_is_the_one_the_bench_script_prints():
    """The README's comparison table must be regenerated when the corpus or the parser change."""
    import subprocess
    import sys

    root = CORPUS.parents[1]
    printed = subprocess.run([sys.executable, str(root / "bench" / "parser_table.py")],
                             capture_output=True, text=True, check=True).stdout.strip()
    readme = (root / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- parser-table:start -->")[1].split("<!-- parser-table:end -->")[0]
    assert shown.strip() == printed, "run `python bench/parser_table.py` and update README.md"


# --- classes of real responses (issue 12) ---------------------------------------------------------


@pytest.mark.parametrize("raw, plain_text", [
    ("$24 \\mathrm{~cm}$", " 24  cm "), ("\\frac{1}{3}", "1/3"), ("\\frac{a+b}{2}", "(a+b)/2"),
    ("$30^\\circ$", " 30° "), ("30^{\\circ}", "30°"), ("Ａ（Ｂ）", "A(B)"), ("−5", "-5"),
    ("1,200 cells", "1200 cells"), ("1, 2, 3", "1, 2, 3"), ("\\boxed{\\text{B}}", "\\boxed{B}"),
])
def test_plain_writes_latex_and_typography_plainly(raw, plain_text):
    assert plain(raw) == plain_text


@pytest.mark.parametrize("text, options, letter", [
    ("The answer is 24 Cm.", {"A": "$12 \\mathrm{~cm}$", "B": "$24 \\mathrm{~cm}$"}, "B"),
    ("350.93 K", {"A": "340.93K", "B": "350.93K"}, "B"),
    ("\\boxed{\\frac{a}{a+b}}", {"A": "$\\sqrt{\\frac{a}{b}}$", "B": "$\\frac{a}{b}$"}, None),
    ("The answer is 3.5", {"A": "3", "B": "5"}, None),        # "3" is not a part of "3.5"
    ("The answer is -3", {"A": "3", "B": "-3"}, "B"),
])
def test_value_options_match_only_whole_values(text, options, letter):
    assert parse_answer(text, options).letter == letter


@pytest.mark.parametrize("text, rule, letter", [
    ("Eosinophils and basophils both have granules, but (B) eosinophil fits the orange colour.",
     "labelled_option", "B"),
    ("Basophils have dark granules. The cell here, an eosinophil (option B), has orange ones.",
     "labelled_option", "B"),
    ("(F) yes (G) no (H) yes (I) no", "invalid:alphabet_run", None),
    ("The count is 7, which is not among the options.", "invalid:no_matching_option", None),
    ("Option (B) is not the correct answer.", "invalid:no_answer", None),
])
def test_new_rules_name_themselves(text, rule, letter):
    got = parse_answer(text, {k: v for k, v in BLOOD.items() if k != "F"})
    assert (got.letter, got.rule) == (letter, rule)


def test_think_blocks_are_removed_by_one_linear_scan():
    assert clean("a</think>b<think>c</think>d") == "b d"
    assert clean("<think>x<think>y</think>z") == "z"
    assert clean("<think>" * 50_000) == ""


def test_a_very_long_response_is_read_by_its_opening_and_conclusion():
    ramble = "The granules are hard to make out in this field. " * 2_000  # 100 KB
    assert len(ramble) > MAX_READ
    assert parse_answer(ramble + "The answer is (B).", BLOOD).letter == "B"
    assert parse_answer("C\n\n" + ramble, BLOOD).letter == "C"
    # Up to MAX_READ characters, the whole response is read.
    long = "Answer: A\n" + "x " * ((MAX_READ - 30) // 2) + "\nAnswer: E"
    assert len(long) <= MAX_READ and parse_answer(long, BLOOD).letter == "E"
