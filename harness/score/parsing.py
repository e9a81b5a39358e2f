"""Read the letter a response committed to: an ordered cascade of named rules, else *invalid*.

`clean` first removes what the model did not mean as its answer: `<think>` blocks, chat-template
tokens (and any turn generated after an end-of-turn token), an echoed prompt, and a new question the
model went on to invent after answering; `plain` writes LaTeX and typography the same way in the
response and in the option texts; a response over `MAX_READ` characters is read by its opening and
its conclusion, so any input parses in bounded time, and no regex here can backtrack
super-linearly. Then each rule, from most to least explicit, is a small
function `(text, options) -> letter | Invalid | None`: the first that decides wins and its name goes
into the record, so every score can be audited. Nothing here guesses: a response that commits to
no single option is invalid, with the reason.

Two answers at once: the *last* commitment wins, so self-corrections count ("Answer: B ... wait,
actually C" is C). A commitment that names several letters ("A or C", "ANSWER: A, C", "B/D"), or
two different commitments with nothing but spaces and punctuation between them ("Answer: B\\n
Answer: D"), is invalid: there is no correction, just two answers.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, TypeAlias

INVALID_PREFIX = "invalid:"


@dataclass(frozen=True)
class Extraction:
    """The parser's answer: the letter (None if invalid) and the rule that decided."""
    letter: str | None
    rule: str  # the rule that decided, or "invalid:<reason>"

    @property
    def valid(self) -> bool:
        """Whether the response named one option."""
        return self.letter is not None


@dataclass(frozen=True)
class Invalid:
    """A verdict that the response names no single valid option, and why."""
    reason: str


Verdict: TypeAlias = "str | Invalid | None"
Options = Mapping[str, str]

# ---------------------------------------------------------------------------------------------
# Cleaning

_THINK_TAG = re.compile(r"<(/?)think>", re.I)
_END_OF_TURN = re.compile(r"</s>|<\|im_end\|>|<\|eot_id\|>|<end_of_turn>|<\|end\|>|<\|endoftext\|>|"
                          r"<eos>|<\|eos\|>")
_TOKENS = re.compile(r"<s>|<\|im_start\|>(?:assistant|user|system)?|<start_of_turn>(?:model|user)?|"
                     r"<\|start_header_id\|>\w*<\|end_header_id\|>|<\|begin_of_text\|>|"
                     r"<\|(?:assistant|user|system)\|>|\[/?INST\]|<pad>")
_ROLE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?(?:human|user|assistant|gpt|bot)[ \t]*:[ \t]*",
                   re.I | re.M)
_QUESTION = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?(?:question(?:[ \t]*\d+)?|q|问题)"
                       r"(?:\*\*)?[ \t]*(?:[:：].*)?$", re.I | re.M)
_LISTED = re.compile(r"^[ \t]*[(\[]?([A-Z])[)\].:][ \t]+(\S.*?)[ \t]*$")
OPTION_LINE = _LISTED  # one option line, `A) text`: its letter and text (the test server's too)
_OPTION_LINE = re.compile(r"^[ \t]*(?:options?[ \t]*[:：].*|[(\[]?[A-Z][)\].:][ \t]+\S.*|"
                          r".*\([A-Z]\)[^()]*\([A-Z]\).*)$", re.I)


def clean(response: str, options: Options | None = None) -> str:
    """The part of a response that can hold its answer; the raw response is kept elsewhere.

    With `options`, an echoed prompt is dropped and a question generated after the answer cut off.
    A response longer than `MAX_READ` characters is read by its first `HEAD_READ` and last
    `TAIL_READ` characters (see `_bounded`).
    """
    text = _first_turn(_outside_think(_bounded(response)))
    if options is not None:
        text = _drop_prompt_and_continuation(plain(text), {k: plain(v) for k, v in options.items()})
    return text.strip()


def _outside_think(text: str) -> str:
    """`text` without its `<think>…</think>` blocks, without what precedes a `</think>` the chat
    template opened, and without an unclosed `<think>` (no answer was given): one linear scan."""
    kept: list[str] = []
    pos, open_block = 0, False
    for m in _THINK_TAG.finditer(text):
        if not m.group(1):  # <think>
            if not open_block:
                kept.append(text[pos:m.start()])
                open_block = True
        elif open_block:
            open_block, pos = False, m.end()
        else:  # a </think> without its <think>: everything before it was reasoning
            kept, pos = [], m.end()
    if not open_block:
        kept.append(text[pos:])
    return " ".join(kept)


def _first_turn(text: str) -> str:
    """The first non-empty turn, template tokens removed: what follows an end-of-turn token was
    generated past the model's answer."""
    turns = (_TOKENS.sub(" ", turn) for turn in _END_OF_TURN.split(text))
    return next((turn for turn in turns if turn.strip()), "")


# A response longer than MAX_READ characters (no real one comes near: the longest of 765 real
# responses in the development corpus has 15,124) is read by its first HEAD_READ characters (where
# a leading letter, or an answer followed by invented questions, sits) and its last TAIL_READ (its
# conclusion). This bounds the work on any input, 1 MB of output included, and changes nothing on
# responses up to MAX_READ characters.
MAX_READ = 24_000
HEAD_READ = 1_000
TAIL_READ = 3_000


def _bounded(text: str) -> str:
    if len(text) <= MAX_READ:
        return text
    return text[:HEAD_READ] + "\n\n" + text[len(text) - TAIL_READ:]


def _drop_prompt_and_continuation(text: str, options: Options) -> str:
    """At each break (a question header, a role marker, a listing of the options): if the text
    before it already says something (an answer, a refusal, two answers), the rest is a new turn
    the model invented; if it says nothing, the text up to the end of the break is an echo of the
    prompt (whose "(X)" placeholder is no answer either). A listing of the options alone, after
    reasoning that names several of them, is the model reviewing the options, not a new turn."""
    cut = 0
    for start, end, listing in _breaks(text, options):
        if start < cut:
            continue
        said = _decide(text[cut:start], options)
        if listing and end < len(text.rstrip()) and said.rule in (
                "option_text", INVALID_PREFIX + "ambiguous_option_text"):
            said = Extraction(None, INVALID_PREFIX + "no_answer")
        if said.valid or not said.rule.startswith(_SAYS_NOTHING):
            return text[cut:start]
        cut = end
    return text[cut:]


_SAYS_NOTHING = tuple(INVALID_PREFIX + reason
                      for reason in ("empty", "no_answer", "letter_out_of_range"))


def _breaks(text: str, options: Options) -> list[tuple[int, int, bool]]:
    """(start, end, is a bare listing) of every role marker, question header (with the options
    listed after it) and listing of the options, in order."""
    found = [(m.start(), m.end(), False) for m in _ROLE.finditer(text)]
    found += [(m.start(), _question_block_end(text, m.end()), False)
              for m in _QUESTION.finditer(text)]
    found += [(start, end, True) for start, end in _listings_of_options(text, options)]
    return sorted(found)


def _question_block_end(text: str, header_end: int) -> int:
    """The end of an echoed question: its header line, up to three lines of question text,
    then the lines listing options; just the header line when no options follow."""
    pos, end, text_lines, seen_options = header_end, header_end, 0, False
    for line in text[header_end:header_end + 4000].split("\n")[1:]:
        pos += len(line) + 1
        if _OPTION_LINE.match(line):
            seen_options, end = True, pos
        elif seen_options or text_lines >= 3:
            break
        elif line.strip():
            text_lines += 1
    return min(end, len(text))


def _listings_of_options(text: str, options: Options) -> list[tuple[int, int]]:
    """Runs of lines that list the item's letters ("A) platelet"), two or more of them with the
    item's option text verbatim (a re-typed list may misspell some)."""
    found, run, verbatim, pos = [], [], 0, 0
    lines = text.split("\n")
    for i, line in enumerate(lines + [""]):
        m = _LISTED.match(line) if i < len(lines) else None
        if m and m.group(1) in options:
            run.append((pos, pos + len(line)))
            verbatim += _norm(m.group(2)) == _norm_option(options[m.group(1)])
        elif line.strip() or not run or i == len(lines):  # a blank line may sit inside a listing
            if verbatim >= 2:
                found.append((run[0][0], run[-1][1]))
            run, verbatim = [], 0
        pos += len(line) + 1
    return found


# ---------------------------------------------------------------------------------------------
# Normalisation: the same plain form for the response and the option texts

_FULL_WIDTH: dict[int, int | str] = {**{c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)},
                                     0x3000: 0x20, 0x2212: 0x2D, 0x00B2: "^2", 0x00B3: "^3"}
_LATEX_PLAIN: tuple[tuple[re.Pattern, Any], ...] = tuple((re.compile(p), r) for p, r in (
    (r"\\(?:mathrm|text|textbf|textrm|textit|mathbf|mathit|operatorname)\s*\{([^{}]*)\}", r"\1"),
    (r"\\sqrt\s*\{([^{}]*)\}", r"√\1"),
    (r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", lambda m: f"{_group(m[1])}/{_group(m[2])}"),
    (r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", lambda m: f"{_group(m[1])}/{_group(m[2])}"),
    (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", "°"),
    (r"\\left\b|\\right\b|\\[()\[\]]|\$", " "),
    (r"\\[,;:! ]|~", " "),
    (r"\\%", "%"), (r"\\pi\b", "π"), (r"\\times\b", "×"), (r"\\cdot\b", "·"),
    (r"\^\s*\{([^{}]*)\}", r"^\1"),
    (r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])", None),  # thousands separators
))


def _group(term: str) -> str:
    """A fraction's numerator or denominator, in parentheses when it is more than one term."""
    term = term.strip()
    return f"({term})" if re.search(r"[\s+\-*/]", term) else term


def plain(text: str) -> str:
    """LaTeX and typography written plainly, the same way in a response and in option texts:
    `$24 \\mathrm{~cm}$` → "24 cm", `\\frac{1}{3}` → "1/3", `30^\\circ` → "30°", full-width
    `Ａ（Ｂ）` → "A(B)", "−" → "-", "1,000" → "1000". Letters, words and `\\boxed{` are kept."""
    text = text.translate(_FULL_WIDTH)
    if "\\" not in text and "$" not in text and "~" not in text and "," not in text and (
            "^" not in text):
        return text
    for pattern, repl in _LATEX_PLAIN:
        text = pattern.sub(repl if repl is not None else _without_commas, text)
    return text


def _without_commas(m: re.Match) -> str:
    return m.group().replace(",", "")


def plain_options(options: Options) -> dict[str, str]:
    """Option texts in the parser's plain form, compared against the plain response."""
    return {letter: plain(text) for letter, text in options.items()}


_WORD = re.compile(r"[^\W_]+")


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower().replace("&", " and ")))


@lru_cache(maxsize=4096)
def _norm_option(text: str) -> str:
    return _norm(text)


# ---------------------------------------------------------------------------------------------
# Option texts and letters

_NONE_SYNONYM = re.compile(r"(?<![^\W_])none\s+of\s+(?:the|these|those)\s+(?:listed\s+|given\s+|"
                           r"above\s+|provided\s+)?(?:options|choices|answers)(?![^\W_])", re.I)


_OPTION_TOKEN = re.compile(r"(?:(?<![^\s(\[])-)?\d+(?:\.\d+)?|[^\W\d_]+")


_FORMULA = re.compile(r"[/^*+=√×·]|\([^)]*\d")
_FORMULA_EDGE = r"\w^*/+=√×·-"


def _formula_pattern(option: str) -> re.Pattern | None:
    """A formula ("√a/b", "2+2√2", "5.00*10^(-3) mm/mm") as written, spaces aside, "/" or ":" for
    a ratio: read word by word, "a/b" would be found inside "a/a+b"."""
    chars = [c for c in option.strip(" .") if not c.isspace()]
    if not chars:
        return None
    parts = ["[/:]" if c in "/:" else "[.,]" if c == "." else re.escape(c) for c in chars]
    return re.compile(rf"(?<![.{re.escape(_FORMULA_EDGE)}])" + r"\s*".join(parts)
                      + rf"(?![{re.escape(_FORMULA_EDGE)}]|[.,]\d)", re.I)


@lru_cache(maxsize=4096)
def _option_pattern(option: str) -> re.Pattern | None:
    """Option text, normalised: any case, any run of spaces/punctuation/hyphens/underscores between
    words, "&" for "and", an optional plural, a unit with or without a space ("24cm", "350.93 K"),
    "," or "." as decimal mark; a number is not part of a longer or negative one ("3" is not in
    "-3", "30" or "3.5"); a one-character option ("S") only as written."""
    if _FORMULA.search(option):
        return _formula_pattern(option)
    words = _OPTION_TOKEN.findall(option)
    if not words:
        return None
    if len(words) == 1 and len(words[0]) == 1 and not words[0].isdigit():
        return re.compile(rf"(?<![^\W_]){re.escape(words[0])}(?![^\W_])")
    parts = []
    for i, w in enumerate(words):
        if w[-1].isdigit():
            part = re.escape(w).replace(r"\.", "[.,]")
            part = (r"(?<![\d.,])(?<!\d[.,])" + ("" if w[0] == "-" else r"(?<!-)") + part
                    + r"(?![.,]\d)")
        else:
            part = "(?:and|&)" if w.lower() == "and" else re.escape(w)
        if i:
            number_and_unit = words[i - 1][-1].isdigit() != w[-1].isdigit()
            parts.append(r"[\W_]*" if number_and_unit else r"[\W_]+")
        parts.append(part)
    last = words[-1]
    if len(last) > 3 and last.isalpha():
        parts[-1] = (re.escape(last[:-1]) + "s?") if last.lower().endswith("s") else (
            re.escape(last) + "(?:e?s)?")
    # Not the tail of a hyphenated word: "Pro-metaphase" does not name "metaphase".
    return re.compile(r"(?<![^\W_])(?<![^\W_]-)" + "".join(parts) + r"(?![^\W_])", re.I)


def _none_letter(options: Options) -> str | None:
    return next((k for k, v in options.items() if _norm_option(v) == "none of the above"), None)


def _mentions(text: str, options: Options) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, letter) mentions of option texts, leftmost-longest
    ("early anaphase", not "anaphase"); several rules ask about the same text."""
    return _mentions_of(text, tuple(options.items()))


@lru_cache(maxsize=8)
def _mentions_of(text: str, items: tuple[tuple[str, str], ...]) -> list[tuple[int, int, str]]:
    options = dict(items)
    found = []
    for letter, option in options.items():
        pattern = _option_pattern(option)
        if pattern is not None:
            found += [(m.start(), m.end(), letter) for m in pattern.finditer(text)]
    if none := _none_letter(options):
        found += [(m.start(), m.end(), none) for m in _NONE_SYNONYM.finditer(text)]
    kept: list[tuple[int, int, str]] = []
    for f in sorted(found, key=lambda f: (f[0], f[0] - f[1])):
        if not kept or f[0] >= kept[-1][1]:
            kept.append(f)
    return kept


_ARTICLE = re.compile(r"(?:an?|the)\s+", re.I)


def _option_at(text: str, pos: int, options: Options, article: bool = True
               ) -> tuple[str, int] | None:
    """(letter, end) of the longest option text starting at `pos` (after an article)."""
    starts = [pos]
    if article and (m := _ARTICLE.match(text, pos)):
        starts.append(m.end())
    best = None
    for start in starts:
        for letter, option in options.items():
            pattern = _option_pattern(option)
            m = pattern.match(text, start) if pattern is not None else None
            if m and (best is None or m.end() > best[1]):
                best = (letter, m.end())
        if none := _none_letter(options):
            if (m := _NONE_SYNONYM.match(text, start)) and (best is None or m.end() > best[1]):
                best = (none, m.end())
    return best


# Yes/no and left/right option texts as answered in Chinese, Japanese, Korean, Spanish, French,
# German, Portuguese and Russian: read only as the whole response or the target of an answer frame
# ("答案：是"), never inside running text, where "是" is also a copula.
_TRANSLATIONS = {
    "yes": "是的|是|对|對|はい|예|네|sí|si|oui|ja|sim|да",
    "no": "不是|否|不|いいえ|아니요|아니오|아니|non|nein|não|nao|нет",
    "left": "左边|左側|左|왼쪽|izquierda|gauche|links|esquerda|слева|левый",
    "right": "右边|右側|右|오른쪽|derecha|droite|rechts|direita|справа|правый",
}
_TRANSLATED = {k: re.compile(rf"(?:{v})(?![^\W_])", re.I) for k, v in _TRANSLATIONS.items()}


def _translated_at(text: str, pos: int, options: Options) -> tuple[str, int] | None:
    """(letter, end) of a yes/no or left/right option answered in another language at `pos`."""
    for letter, option in options.items():
        pattern = _TRANSLATED.get(_norm_option(option))
        if pattern and (m := pattern.match(text, pos)):
            return letter, m.end()
    return None


_CLOSERS = re.compile(r"(?:[)\]}*_`\"'“”’）】$]+|\\[)\]]){0,8}")
_STRONG_AFTER = re.compile(r"\s*(?:$|\n|[.,;:!?。，；：、)\]}\-–—/|<]|[^\x00-\x7f])")
_WORD_AFTER = re.compile(r"\s+\(?([A-Za-z]+)")
_CONNECTORS = frozenset("because since as given due which that is was with for from here based "
                        "considering seems appears".split())
_MULTI = re.compile(r"\s*[(\[]?\s*(?:,|\band/or\b|/|&|\bor\b|\band\b|或|和|、|以及)\s*"
                    r"(?:(?:possibly|maybe|perhaps|also|option|choice|either)\s+)*[(\[*$（]*"
                    r"([A-Za-z])(?![A-Za-z0-9])(?!\s+(?:is|are|was|were|would|could|can|has|have)\b)")
_LABEL_SEP = re.compile(r"\s*[).:：\-–—,(]?\s*")
_OPERATOR_AFTER = re.compile(r"\s*[/^*+=<>]")
_QUOTED = re.compile(r"[\"“'‘][A-Z][\"”'’]")
_GLOSSED = re.compile(r"[ \t]*\([^()\n]{1,80}\)")


@dataclass(frozen=True)
class _Letter:
    letter: str  # as written (case kept)
    start: int
    end: int  # after closing wrappers


def _letter_at(text: str, pos: int, options: Options) -> _Letter | None:
    """A letter written as a choice at `pos`: followed by punctuation, the end, its own option text,
    a connector ("A because") or another letter ("A or C"); not the article in "A cell" nor the "B"
    of "B cells"."""
    c = text[pos:pos + 1]
    if not (c.isascii() and c.isalpha()) or (pos and text[pos - 1].isascii()
                                              and text[pos - 1].isalnum()):
        return None
    nxt = text[pos + 1:pos + 2]
    if (nxt.isascii() and (nxt.isalnum() or nxt == "'")) or (nxt.isalpha() and nxt <= "\u024f"):
        return None  # part of a word, also an accented one ("sí")
    if c.islower() and _OPERATOR_AFTER.match(text, pos + 1):
        return None  # "a/b", "a + b": a variable
    end = _skip(_CLOSERS, text, pos + 1)
    if (_STRONG_AFTER.match(text, end) or re.search(r"[)\]）】]", text[pos + 1:end])
            or _MULTI.match(text, end)):
        return _Letter(c, pos, end)
    if c.islower():
        return None
    if _QUOTED.match(text, max(0, pos - 1)) or _GLOSSED.match(text, end):
        return _Letter(c, pos, end)  # "\"A\" in the second image", "C (12.25)"
    own_text = options.get(c)
    if own_text and (p := _option_pattern(own_text)) and p.match(text, _skip(_LABEL_SEP, text, end)):
        return _Letter(c, pos, end)
    word = _WORD_AFTER.match(text, end)
    if word and (word.group(1).lower() in _CONNECTORS or (word.group(1)[0].isupper() and c != "A")):
        return _Letter(c, pos, end)
    return None


def _judge_letter(text: str, tok: _Letter, options: Options) -> Verdict:
    """A letter token → the letter, or invalid: outside the options, one of several, or labelled
    with another option's text ("B) neutrophil" when B is eosinophil)."""
    letter = tok.letter.upper()
    after = tok.end  # "A (neutrophil) or B", "A) neutrophil or B)": past a gloss or its own text
    if gloss := _GLOSSED.match(text, after):
        after = gloss.end()
    elif (own := options.get(letter)) and (p := _option_pattern(own)) and (
            m := p.match(text, _skip(_LABEL_SEP, text, after))):
        after = m.end()
    multi = _MULTI.match(text, tok.end) or _MULTI.match(text, after)
    if multi and multi.group(1).upper() != letter and (
            multi.group(1).isupper() == tok.letter.isupper()):
        return Invalid("multiple_answers")
    if letter not in options:
        return Invalid(f"letter_out_of_range({letter})")
    label = _option_at(text, _skip(_LABEL_SEP, text, tok.end), options)
    if label and label[0] != letter and re.match(r"\s*(?:$|\n|[.,;)*])", text[label[1]:]):
        own_pattern = _option_pattern(options[letter])
        if not (own_pattern and own_pattern.search(text, tok.end, label[1])):
            return Invalid("letter_text_mismatch")
    return letter


def _starts_with_option_text(text: str, pos: int, options: Options) -> str | None:
    """The option whose own text starts at `pos` with a letter-like word ("C. elegans", "S")."""
    hit = _option_at(text, pos, options, article=False)
    return hit[0] if hit else None


# ---------------------------------------------------------------------------------------------
# Rule 1: explicit commitments

_FILLER = re.compile(
    r"(?:[\s*_`\"'“”‘’(\[{（【$:：>#=]+|\\(?:boxed|text|textbf|mathbf|mathrm|textrm|mathtt)\s*\{|"
    r"\\[(\[]|\b(?:option|choice|letter|most\s+likely|more\s+likely|likely|probably|clearly|"
    r"definitely|therefore|thus|then|simply|indeed|opción|opcion|alternativa|вариант|variante|la|el|le|die|der)\b|"
    r"選択肢|选项|선택지){0,12}", re.I)


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """End of `pattern` matched at `pos`; for the patterns above that may match nothing, so always match."""
    m = pattern.match(text, pos)
    assert m is not None, pattern.pattern
    return m.end()


_I = r"(?i:"  # case-insensitive words around a case-sensitive letter

# (pattern, strong): strong markers may point at an option text, weak ones only at a letter.
_MARKERS: tuple[tuple[re.Pattern, bool], ...] = tuple(
    (re.compile(p, re.I | re.M), strong) for p, strong in (
    (r"(?:\b(?:the|my|our)\s+)?(?:\b(?:final|correct|right|best|most\s+(?:likely|appropriate|"
     r"probable|plausible|accurate)|revised|updated|new)\s+)?\banswers?\b(?:\s+(?:here|therefore|"
     r"then|thus|choice|option|letter))?[\s*_]*(?:is|are|would\s+be|should\s+be|will\s+be|must\s+be|"
     r"seems\s+to\s+be|[:：=\-–—])", True),
    (r"\b(?:final|correct|right|best)\s+answer\b", True),
    (r"^[ \t*_#]*(?:final[ \t]+)?answer[ \t*_]*:?[ \t*_]*$", True),
    (r"\b(?:the\s+)?(?:correct|right|best|most\s+(?:likely|appropriate|plausible))\s+(?:option|"
     r"choice|letter|response|selection)(?:\s+letter)?\s*(?:is|would\s+be|[:：=])", True),
    (r"\bI\s*(?:would|will|'d|’d|'ll|’ll|am\s+going\s+to)?\s*(?:choose|select|pick|go\s+with|"
     r"opt\s+for)\b|\bI\s*(?:would|'d|’d)\s+say\b|\b(?:my\s+)?(?:choice|selection|pick)\s*(?:is|:|：)|"
     r"\bgoing\s+with\b|\bchange\s+(?:my\s+answer\s+)?to\b", True),
    (r"\b(?:corresponds?\s+to|matches|refers\s+to)\s+(?=option|choice)", True),
    (r"\\boxed\s*\{|<answer>", True),
    # Other languages: Japanese, Korean, Spanish, French, German, Portuguese, Russian.
    (r"(?:答え|正解|解答)\s*(?:は|：|:)|(?:정답|답)\s*(?:은|는)?\s*[:：]?(?=\s*[(\[]?[A-Z])|"
     r"\b(?:la\s+|a\s+|die\s+)?(?:bonne\s+|richtige\s+|korrekte\s+)?(?:respuesta|réponse|resposta|"
     r"antwort)(?:\s+(?:correcta|correcte|correta|final|finale))?\s*(?:(?:est|es|é|ist|lautet|"
     r"sería|serait|seria|wäre)\b|[:：])|(?:правильный\s+)?\bответ\b\s*(?:[:：—\-]|это|будет)", True),
    (r"(?:最终|正确)?(?:答案|回答|解答)(?:选项)?\s*(?:应该是|应该为|应为|应是|是|为|选|：|:)?|(?:故|应|因此|所以|我|则|只能)?选(?:择)?"
     r"(?!项)\s*(?:是|为|：|:)?|正确的?(?:选项|答案)\s*(?:是|为|：|:)?", True),
    (r"\b(?:so|thus|therefore|hence|i\.e\.|leaves|leaving)\b[\s,:]*(?:it'?s\s+|it\s+is\s+)?",
     False),
    # A frame naming the letter: "the correct corresponding point ... is (D)", "Therefore, the
    # matching point would be \"A\"" (a letter only, never an option text).
    (r"\b(?:(?:the\s+)?(?:correct|right|best|matching|corresponding|most\s+\w+)|(?:so|thus|"
     r"therefore|hence)\b,?)\s+(?:[\w'\"“”-]+\s+){0,10}(?:is|would\s+be|should\s+be|must\s+be)\b",
     False),
    (r"\b(?:it'?s|it’s|it\s+is|this\s+is|that\s+is|makes\s+it|it\s+must\s+be|it\s+should\s+be|"
     r"it\s+would\s+be|this\s+would\s+be)\b", False),
    (r"\b(?:actually|correction|I\s+meant|I\s+mean|on\s+second\s+thought|wait|rather|make\s+that|"
     r"sorry)\b[\s,:;—–\-]*(?:no\b[\s,—–\-]*)?(?:it'?s\s+|it\s+is\s+)?", False),
))
# Letter first: "D is the correct answer", "Option D (immature granulocyte) seems the best fit".
_LETTER_FIRST = tuple(re.compile(p) for p in (
    r"(?<![A-Za-z0-9])" + _I + r"(?:option\s+|choice\s+)?)[(\[*]{0,3}([A-Z])[)\]*]{0,3}"
    r"(?:\s*\([^()\n]{1,60}\))?\s+" + _I + r"(?:(?:is|seems|appears|looks)\s+(?:to\s+be\s+)?"
    r"(?:the\s+)?(?:correct|right|best|"
    r"most\s+likely|more\s+likely|most\s+appropriate|closest)\b|is\s+(?:the\s+)?(?:correct\s+|right\s+|"
    r"best\s+)?answer\b|fits\s+(?:best|better)\b))",
    r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])[ \t]{0,3}(?:是|为)?[ \t]{0,3}(?:正确|对的)",
))


def _read_target(text: str, pos: int, options: Options, strong: bool
                 ) -> tuple[Verdict, int, int]:
    """What a marker ending at `pos` commits to: (verdict, start, end) of its target."""
    start = _skip(_FILLER, text, pos)
    if strong and (hit := _option_at(text, start, options) or _translated_at(text, start, options)):
        literal = _starts_with_option_text(text, start, options)
        tok = _letter_at(text, start, options)
        if tok is not None and tok.letter in options and len(_norm_option(options[hit[0]])) == 1:
            pass  # options whose texts are letters: "Answer: C" is the letter C
        elif literal or tok is None or tok.letter.upper() == hit[0]:
            return hit[0], start, hit[1]
    tok = _letter_at(text, start, options)
    if tok is None:
        return None, start, start
    verdict = _judge_letter(text, tok, options)
    if not strong and isinstance(verdict, Invalid) and verdict.reason.startswith("letter_out"):
        return None, start, start
    return verdict, tok.start, tok.end


_REJECTED_AFTER = re.compile(
    r"\s*(?:\([^()\n]{0,80}\)\s*)?(?:(?:is|are|was|seems|appears|would\s+be)\s+(?:not|incorrect|"
    r"wrong|unlikely|false|ruled\s+out|eliminated|excluded)\b|(?:is|are)n[’']t\b|"
    r"can\s+be\s+(?:ruled\s+out|eliminated|excluded)\b)", re.I)


def rule_final_answer(text: str, options: Options) -> Verdict:
    """Explicit commitments ("ANSWER: B", "the answer is (B)", "答案是B", "\\boxed{B}", "actually
    C"); the last one wins."""
    found: dict[int, tuple[int, int, Verdict]] = {}  # target start → (marker start, end, verdict)
    for pattern, strong in _MARKERS:
        for m in pattern.finditer(text):
            verdict, start, end = _read_target(text, m.end(), options, strong)
            if verdict is not None and _REJECTED_AFTER.match(text, end):
                continue  # "option (B) is not the correct answer"
            if verdict is not None and (start not in found or m.start() < found[start][0]):
                found[start] = (m.start(), end, verdict)
    for pattern in _LETTER_FIRST:
        for m in pattern.finditer(text):
            tok = _Letter(m.group(1), m.start(1), m.end(1))
            found.setdefault(m.start(1), (m.start(1), m.end(), _judge_letter(text, tok, options)))
    if not found:
        return None
    ordered = [found[k] for k in sorted(found)]
    last = ordered[-1]
    if len(ordered) > 1:
        prev = ordered[-2]
        between = text[prev[1]:last[0]]
        if prev[2] != last[2] and not re.search(r"[^\W\d_]", between):
            return Invalid("conflicting_answers")
    return last[2]


# ---------------------------------------------------------------------------------------------
# Rules 2-4: letters without a statement

_WRAPPING = " \t\n*_`\"'“”‘’()[]{}（）【】$>#.:：。!"
_LATEX = re.compile(r"\\(?:boxed|text|textbf|mathbf|mathrm)\s*\{|\\[()\[\]]")
_LABEL_WORD = re.compile(r"(?:option|choice|letter|answer)\s*[:：]?", re.I)
_LIST_SEP = re.compile(r",|/|&|\bor\b|\band\b|\n", re.I)


def _bare_letter(text: str) -> str | None:
    """The one letter `text` consists of, once wrappers are gone: `(B)`, `**B**`, `$\\text{B}$`,
    `Option C`; else None."""
    core = _LATEX.sub(" ", text).strip(_WRAPPING)
    core = _LABEL_WORD.sub("", core, count=1).strip(_WRAPPING) if _LABEL_WORD.match(core) else core
    return core if len(core) == 1 and core.isascii() and core.isalpha() else None


_LEADS = re.compile(r"^[ \t]*[(\[]?([A-Z])[)\].:]", re.M)


def rule_lone_letter(text: str, options: Options) -> Verdict:
    """The response, or its last line or sentence, is one letter: `B`, `(B)`, `**B**`, `$B$`,
    `\\boxed{B}`, `[B]`, lowercase `b`; a bare list of letters ("B and D") is several answers."""
    if _is_option_text(text, options) and text.strip(_WRAPPING) not in options:
        return None  # the whole response is an option text that is no letter, e.g. "S"
    if letter := _bare_letter(text):
        return _in_range(letter.upper(), options)
    parts = [part for part in _LIST_SEP.split(text) if part.strip()]
    listed = [_bare_letter(part) for part in parts]
    if len(parts) > 1 and all(listed):
        letters = {letter.upper() for letter in listed if letter}
        if len(letters) > 1:
            return Invalid("multiple_answers")
        return _in_range(letters.pop(), options)
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) > 1 and not _is_option_text(lines[-1], options) and (
            letter := _bare_letter(lines[-1])):
        return _in_range(letter.upper(), options)
    sentences = re.split(r"(?<=[.!?。])\s+", lines[-1]) if lines else []
    if len(sentences) > 1 and not _is_option_text(sentences[-1], options) and (
            letter := _bare_letter(sentences[-1])) and letter in options:
        return letter
    return None


def _is_option_text(text: str, options: Options) -> bool:
    return _norm(text) in {_norm_option(v) for v in options.values()}


def _in_range(letter: str, options: Options) -> Verdict:
    return letter if letter in options else Invalid(f"letter_out_of_range({letter})")


# A letter opening a line, then a separator (group 2), the end of the line, or spaces (group 3).
_LEAD_LETTER = re.compile(r"^[\s*_`\"'“”(\[（【>#]*([A-Za-z])[*_`]*"
                          r"(?:[ \t]*([).:：,，、。\]）】\-–—])[ \t*_`]*|[ \t*_`]*(?=\n|$)|"
                          r"([ \t]+))")


def _enumerates(text: str) -> bool:
    """Lines that start with different letters ("A) ... / B) ...") list options, not an answer."""
    return len({m.group(1) for m in _LEADS.finditer(text)}) > 1


def rule_letter_with_text(text: str, options: Options) -> Verdict:
    """A letter followed by its own option text: "B. Lymphocyte", "B) lymphocyte", "(B) lymphocyte",
    on the first line, or as the whole last line."""
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines or _enumerates(text):
        return None
    candidates = [(lines[0], False)] + ([(lines[-1], True)] if len(lines) > 1 else [])
    for line, whole in candidates:
        m = _LEAD_LETTER.match(line)
        if not m or _starts_with_option_text(line, len(line) - len(line.lstrip(" \t*_`>#")),
                                             options):
            continue
        letter, sep = m.group(1), m.group(2)
        if letter.islower() and sep not in (")", "."):
            continue
        hit = _option_at(line, m.end(), options)
        if not hit:
            continue
        rest = line[hit[1]:]
        if (whole or not sep) and not re.fullmatch(r"[\s*_`.)\]]*", rest):
            continue  # "A lymphocyte would have...": an article, not a letter
        if hit[0] == letter.upper():
            return hit[0]
        if sep and re.match(r"\s*(?:$|[.,;)*])", rest):
            return hit[0] if _answer_label(letter, sep, options) else Invalid("letter_text_mismatch")
    return None


def _answer_label(letter: str, sep: str | None, options: Options) -> bool:
    """"A:" opening the answer to a yes/no question labels it as in a Q/A transcript ("A: No,
    ..."): read so when the text after it is the other option's."""
    return letter == "A" and sep in (":", "：") and {_norm_option(v) for v in options.values()} == {
        "yes", "no"}


def rule_leading_letter(text: str, options: Options) -> Verdict:
    """The first line starts with a letter and a separator, then explains: "B. The cell has...",
    "C\\n\\nThe nucleus...", "C.\\n\\nA. platelet: no"; not "A cell in mitosis", nor "C. elegans",
    nor the first line of an enumeration ("A) platelet: too small\\nB) ...")."""
    first = text.split("\n", 1)[0]
    m = _LEAD_LETTER.match(first + "\n")
    if not m or m.group(3) is not None or (_enumerates(text) and not _bare_letter(first)):
        return None  # a bare letter on the first line answers, even above notes on other options
    if _starts_with_option_text(first, len(first) - len(first.lstrip(" \t*_`>#")), options):
        return None
    letter, sep = m.group(1), m.group(2)
    if letter.islower() and sep not in (")", "."):
        return None
    tok = _Letter(letter, m.start(1), m.end(1))
    verdict = _judge_letter(first, tok, options)
    if verdict == Invalid("letter_text_mismatch") and _answer_label(letter, sep, options):
        label = _option_at(first, _skip(_LABEL_SEP, first, tok.end), options)
        return label[0] if label else verdict
    return verdict


# ---------------------------------------------------------------------------------------------
# Rule 5: option text

_CLAUSE_BREAK = re.compile(r"[.;:!?,()\n—–]|\b(?:but|however|whereas|while|yet)\b", re.I)
_NEGATED_BEFORE = re.compile(
    r"\b(?:not|no|nor|neither|unlike|than|except|excluding|exclude[sd]?|without|instead|"
    r"isn'?t|aren'?t|wasn'?t|doesn'?t|don'?t|never|ruled?\s+out|rules\s+out|mistaken\s+for|"
    r"compared\s+(?:with|to)|in\s+contrast\s+to|as\s+opposed\s+to|versus|vs)\b",
    re.I)
_NEGATED_AFTER = re.compile(
    r"^\W{0,3}\s*(?:(?:tissue|cells?|phase|stage|microscopy|here)\s+)?"
    r"(?:(?:is|are|was|were|seems?|looks?|appears?)\s+(?:not|unlikely|incorrect|wrong|"
    r"excluded|ruled\s+out|less\s+likely)\b|(?:can|could)\s+be\s+(?:excluded|ruled\s+out)\b|"
    r"would\b|does\s*n[o']t\b|do\s+not\b|\?\s*no\b)", re.I)
_COMMITTED_BEFORE = re.compile(
    r"(?:\b(?:is|are|shows?|showing|depicts?|represents?|indicates?|indicating|suggests?|"
    r"suggesting|consistent\s+with|compatible\s+with|(?:identified|classified)\s+as|"
    r"(?:identify|classify)\s+(?:it|this|the\s+\w+)\s+as|(?:appears|seems)\s+to\s+be|must\s+be|"
    r"looks?\s+(?:most\s+)?like|diagnosis|(?:is|are)\s+(?:(?:most|more)\s+)?likely\s+to\s+be|"
    r"corresponds?\s+to|corresponding\s+to))\s*(?:(?:most|more)\s+)?(?:likely\s+|probably\s+|"
    r"clearly\s+|definitely\s+)?(?:an?\s+|the\s+)?$", re.I)
# "Box B more accurately encloses ...", "..., the third image (B) is most similar": an option text
# opening a sentence (or following an introductory clause) as the subject of a comparison.
_OPENS_SENTENCE = re.compile(r"(?:^|[.!?:\n]|,)\s*$")
_COMPARED_AFTER = re.compile(
    r"\s*(?:\(\s*(?:option\s+|choice\s+)?[A-Z]\s*\)\s*)?(?:(?:is|appears|seems|looks)\s+"
    r"(?:to\s+be\s+)?)?(?:the\s+)?(?:(?:most|more)\s+(?:accurately|closely|similar|likely|"
    r"appropriate|suitable|precisely|tightly|consistent|plausible)|better|best|closer|closest)\b",
    re.I)
# "...grey-blue cytoplasm: monocyte." — a colon or dash commits only to a text that ends the clause.
_LABELLED_BEFORE = re.compile(r"[:：—–=→]\s*(?:an?\s+|the\s+)?$")
_ENDS_CLAUSE = re.compile(r"\s*(?:$|[.;!\n)])")
_OR_BEFORE = re.compile(r"\bor\s+(?:an?\s+)?$")
# "... but it could also be a basophil", "or possibly an eosinophil": a second option kept open.
_ALTERNATIVE_BEFORE = re.compile(
    r"\b(?:(?:could|might|may|can)\s+(?:also|equally|just\s+as\s+well)\s+be|"
    r"or\s+(?:possibly|perhaps|maybe)|(?:alternatively|possibly\s+also))\s+(?:an?\s+|the\s+)?$", re.I)
_HEDGED = re.compile(r"^\s*(?:,|/)?\s*\bor\b", re.I)


def _whole_response_option(text: str, options: Options) -> str | None:
    """A short response that spells one option with other spacing or hyphens, or abbreviates
    exactly one option to its first words ("Confocal" for "confocal microscopy"; a bare "None"
    is no abbreviation of "none of the above", it may mean no answer)."""
    words = _norm(text).split()
    if not words or len(words) > 4:
        return None
    if (said := _translated_at(text.strip(), 0, options)) and not _norm(text.strip()[said[1]:]):
        return said[0]
    compact = "".join(words)
    forms = {compact, compact + "s", compact.removesuffix("s")}  # either side may be plural
    spelled = [k for k, v in options.items() if _norm_option(v).replace(" ", "") in forms]
    if len(spelled) == 1:
        return spelled[0]
    starts = [k for k, v in options.items() if _norm_option(v).split()[:len(words)] == words
              and len(_norm_option(v).split()) > len(words) and _norm_option(v) != "none of the above"]
    return starts[0] if len(starts) == 1 else None


def _is_value(option: str) -> bool:
    """A number, quantity or formula ("24 cm", "135°", "1/3"): such texts also occur in working."""
    return bool(re.search(r"\d", option)) and len(re.findall(r"[^\W\d_]{3,}", option)) <= 1


_SENTENCE_END = re.compile(r"[.!?。](?=\s|$)|\n")
_CONCLUSION_START = re.compile(r"\s*(?:[-*#>]+\s*)?(?:so|thus|therefore|hence|finally|in\s+conclusion|"
                               r"所以|因此|故)\b", re.I)
_OPERATOR_BEFORE = re.compile(r"[-+*/×÷^]\s*$")
_OPERATOR_NEXT = re.compile(r"[°%′″]?\s*[-+*/×÷^=<>]")


class _Sentences:
    """Where the sentences of a text end, found once, so that asking about each of many mentions
    stays linear."""

    def __init__(self, text: str):
        self.text = text
        self.ends = [m.start() for m in _SENTENCE_END.finditer(text)]
        self.content_end = len(text.rstrip())
        self.opens_conclusion: dict[int, bool] = {}

    def concludes(self, start: int, end: int) -> bool:
        """Is text[start:end] a result stated in a concluding sentence (the last one, or one
        opening with so/therefore/thus/hence), not a term of a calculation ("30° + 60° = 90°")?"""
        text = self.text
        if _OPERATOR_BEFORE.search(text, max(0, start - 3), start) or (
                _OPERATOR_NEXT.match(text, end)):
            return False
        i = bisect.bisect_left(self.ends, end)
        if i == len(self.ends) or self.ends[i] + 1 >= self.content_end:
            return True  # the last sentence
        j = bisect.bisect_left(self.ends, start) - 1
        begins = self.ends[j] + 1 if j >= 0 else 0
        if begins not in self.opens_conclusion:
            self.opens_conclusion[begins] = bool(_CONCLUSION_START.match(text, begins))
        return self.opens_conclusion[begins]


def _positive_mentions(text: str, options: Options) -> list[tuple[str, bool | str]]:
    """(letter, committed) for each option text not quoted in a rejected alternative; committed is
    "open" where the text keeps that option open beside another ("could also be a ...")."""
    return _positive_mentions_of(text, tuple(options.items()))


@lru_cache(maxsize=8)
def _positive_mentions_of(text: str, items: tuple[tuple[str, str], ...]
                          ) -> list[tuple[str, bool | str]]:
    options = dict(items)
    out = []
    breaks = [m.end() for m in _CLAUSE_BREAK.finditer(text)]
    sentences = _Sentences(text)
    values = {letter for letter, option in items if _is_value(option)}
    for start, end, letter in _mentions(text, options):
        if letter in values and not sentences.concludes(start, end):
            continue
        i = bisect.bisect_right(breaks, start)
        clause_start = breaks[i - 1] if i else 0
        before = " ".join(text[max(clause_start, start - 80):start].split()[-5:])
        after = text[end:end + 40]
        if _NEGATED_BEFORE.search(before) or _NEGATED_AFTER.match(after):
            continue
        window = text[max(0, start - 60):start]
        committed = bool(_COMMITTED_BEFORE.search(window) or (
            _LABELLED_BEFORE.search(window) and _ENDS_CLAUSE.match(text, end)) or (
            _OPENS_SENTENCE.search(window) and _COMPARED_AFTER.match(text, end))) and not (
            _HEDGED.match(after) or _OR_BEFORE.search(text, max(0, start - 12), start))
        kept_open = bool(_ALTERNATIVE_BEFORE.search(window))
        out.append((letter, "open" if kept_open else committed))
    return out


_NO_OPTION_FITS = re.compile(
    r"\bnot\s+(?:an?\s+|one\s+of\s+the\s+|among\s+the\s+|in\s+the\s+|listed\s+(?:in|among)\s+the\s+)"
    r"(?:given\s+|provided\s+|available\s+|answer\s+)?(?:options?|choices?)\b|"
    r"\b(?:options?|choices?|answers?)\s+(?:is|are)\s+not\s+(?:available|listed|provided|given|"
    r"among)\b|\bnot\s+available\s+in\s+the\s+(?:given\s+)?(?:options|choices)\b|"
    r"\bnone\s+of\s+the\s+(?:given\s+|provided\s+)?(?:options|choices|answers)\s+(?:is|are|match|"
    r"fits?)\b|\b(?:matches|fits|is|equals)\s+none\s+of\s+the\s+(?:options|choices|answers)\b|"
    r"\b(?:mistake|error)\s+in\s+the\s+(?:question|problem|options|choices)\b", re.I)


def _no_option_fits(text: str, options: Options) -> bool:
    """The response says its result is none of the options (when "none of the above" is not
    one): the option texts it names are working, not an answer."""
    return _none_letter(options) is None and bool(_NO_OPTION_FITS.search(text))


def rule_option_text(text: str, options: Options) -> Verdict:
    """The option text alone ("Immature granulocyte", "IMMATURE_GRANULOCYTE", "Pro-metaphase", or
    "Confocal" when only one option starts so), else named in the text ("It is a lymphocyte"),
    ignoring options rejected there ("not a lymphocyte but a neutrophil"): the last one stated as
    the answer ("this is a ...") wins, else it must be the only one named."""
    if whole := _whole_response_option(text, options):
        return whole
    if _no_option_fits(text, options):
        return None
    mentions = _positive_mentions(text, options)
    committed = [letter for letter, c in mentions if c is True]
    if any(c == "open" for _, c in mentions) and len({letter for letter, _ in mentions}) > 1:
        return None  # a hedge between options: "a lymphocyte, but it could also be a basophil"
    if committed:
        return committed[-1]
    letters = {letter for letter, _ in mentions}
    return letters.pop() if len(letters) == 1 else None


# "(B) the third image", "[option B] the third image"
_LABEL_BEFORE = re.compile(r"[(\[]\s*(?:(?i:option|choice)\s+)?([A-Z])\s*[)\]][\s*_]*$")
# "the third image (B)", "the right (option B)", "the third image (Choice B)"
_LABEL_AFTER = re.compile(r"[\s*_]*[(\[]\s*(?:(?i:option|choice)\s+)?([A-Z])\s*[)\]]")


_CONCEDED_BEFORE = re.compile(r"\b(?:although|though|while|whereas|unlike|not|except|rather\s+than)"
                              r"\b[^.;:!?\n]*$", re.I)


def rule_labelled_option(text: str, options: Options) -> Verdict:
    """An option text written with its own letter, outside an enumeration of the options: "Based
    on this, (B) the third image is more likely", "the camera moves to the right (option B)". The
    same text under another letter contradicts it; two different labelled options decide nothing."""
    if _REFUSAL.search(text):
        return None
    enumerates = _enumerates(text)
    letters = set()
    for start, end, letter in _mentions(text, options):
        before = _LABEL_BEFORE.search(text, max(0, start - 16), start)
        after = _LABEL_AFTER.match(text, end)
        mark = before or after
        label = mark.group(1) if mark else None
        if not label:
            continue
        if before and enumerates and not text[text.rfind("\n", 0, before.start()) + 1:
                                              before.start()].strip(" \t*_#>-"):
            continue  # the head of an item in an enumeration of the options
        if _NEGATED_AFTER.match(text[end:end + 40]) or _REJECTED_AFTER.match(text, end) or (
                _CONCEDED_BEFORE.search(text, max(0, start - 200), start)):
            continue
        letters.add(label if label == letter else "?")
    return letters.pop() if len(letters) == 1 and "?" not in letters else None


# ---------------------------------------------------------------------------------------------
# The cascade

_REFUSAL = re.compile(
    r"\b(?:can(?:no|')?t|can\s+not|unable\s+to|not\s+able\s+to|impossible\s+to|not\s+possible\s+to|"
    r"too\s+blurry|not\s+enough\s+information|insufficient|need\s+more|"
    r"(?:don'?t|do\s+not)\s+know|not\s+sure|uncertain|I'?m\s+sorry|I\s+am\s+sorry|sorry|"
    r"as\s+an\s+AI)\b|无法|不确定|不能确定", re.I)

_LABEL = re.compile(r"(?<![A-Za-z0-9])[(\[]([A-Z])[)\]]|^[ \t]*([A-Z])[).:]", re.M)


def rule_alphabet_run(text: str, options: Options) -> Verdict:
    """Labels running through the alphabet past the options (three in a row or more: "(C) yes
    (D) no (E) yes ..." with options A and B) are generated filler, not an answer."""
    beyond = {m.group(1) or m.group(2) for m in _LABEL.finditer(text)} - set(options)
    runs = [c for c in beyond if chr(ord(c) + 1) in beyond and chr(ord(c) + 2) in beyond]
    return Invalid("alphabet_run") if runs else None


RULES: tuple[tuple[str, Callable[[str, Options], Verdict]], ...] = (
    ("alphabet_run", rule_alphabet_run),
    ("final_answer", rule_final_answer),
    ("lone_letter", rule_lone_letter),
    ("letter_with_text", rule_letter_with_text),
    ("leading_letter", rule_leading_letter),
    ("option_text", rule_option_text),
    ("labelled_option", rule_labelled_option),
)


_LETTER_PAIR = re.compile(r"(?<![A-Za-z0-9])[A-Z][)\]]?\s*(?:,|/|\bor\b|\band\b|或)\s*[(\[]?[A-Z]"
                          r"(?![A-Za-z0-9])")


def _why_invalid(text: str, options: Options) -> str:
    if _REFUSAL.search(text):
        return "refusal"
    if _no_option_fits(text, options):
        return "no_matching_option"
    if len({letter for letter, _ in _positive_mentions(text, options)}) > 1:
        return "ambiguous_option_text"
    return "multiple_answers" if _LETTER_PAIR.search(text) else "no_answer"


def _decide(text: str, options: Options) -> Extraction:
    """Run the rules on already-cleaned text."""
    if not re.search(r"[^\W_]", text):
        return Extraction(None, INVALID_PREFIX + "empty")
    for name, rule in RULES:
        result = rule(text, options)
        if isinstance(result, Invalid):
            return Extraction(None, INVALID_PREFIX + result.reason)
        if result is not None:
            return Extraction(result, name)
    return Extraction(None, INVALID_PREFIX + _why_invalid(text, options))


def parse_answer(response: str | None, options: Options) -> Extraction:
    """The letter `response` committed to among `options` (letter → text), or invalid."""
    text = response or ""
    if len(bare := text.strip()) == 1 and bare in options:
        return Extraction(bare, "lone_letter")  # the commonest answer, decided without the cascade
    return _decide(clean(text, options), plain_options(options))
