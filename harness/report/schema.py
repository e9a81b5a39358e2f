"""The results format as types: a samples.jsonl line (`SampleRecord`, its `ErrorInfo`) and
summary.json (`Summary`). Every writer builds them here and every reader reads them through them.

Versions. Each samples.jsonl line and summary.json carry `schema_version` (`SCHEMA_VERSION`). A line
or summary without it was written before the field existed and is read as version 1, whose fields
are exactly today's: the field only makes the format explicit, so old and new run folders merge,
score and compare alike. A version newer than this harness knows is refused (`NewerSchemaError`,
exit 2 at the CLI): its fields may mean something this code would misread.

Unknown keys. A key that is not a field of this version is kept, untouched, in `extra` and written
back by `to_json`, never refused: a later harness may add a field without changing what the known
ones mean (it bumps the version only when it does), and a run folder must stay readable by the
harness that wrote its first lines (a resumed or merged run mixes both). A key that *is* a field
must have that field's JSON type, or the line is refused naming the file line and the field.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from harness.adapters.base import AdapterError

SCHEMA_VERSION = 1
INT64 = 2 ** 63  # integers beyond ±INT64 fit no samples.parquet column


class SamplesError(ValueError):
    """A samples.jsonl (or summary.json) that cannot be read; the message names the line and the
    field."""


class NewerSchemaError(SamplesError):
    """Written by a newer harness, in a format this one does not know."""


def check_version(data: dict[str, Any], where: str) -> int:
    """The `schema_version` of a line or summary (1 when absent); a newer one is refused."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SamplesError(f"{where}: field 'schema_version' must be a positive integer, "
                           f"got {version!r}")
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(f"{where}: schema_version {version} is newer than this harness "
                               f"reads ({SCHEMA_VERSION}); upgrade ubench-harness to read it")
    return version


# ---------------------------------------------------------------------------------------------
# Per-sample records


@dataclass(slots=True)
class ErrorInfo:
    """Why an item has no answer: a failed request (`type` as the adapter classified it), bad
    input (`bad_input`, with the `field` at fault), or a batch that could not answer it."""

    type: str
    message: str
    status: int | None = None
    attempts: int = 0
    field: str | None = None  # bad_input: the item's field at fault (None: not known)
    reason: str | None = None  # what exactly was wrong, e.g. a bad_response's `null_content`
    stopped_run: bool = False  # the failure stopped the run (a rejected key, nothing listening)
    extra: dict[str, Any] | None = None

    @classmethod
    def bad_input(cls, item_id: str, problem: str, field: str | None) -> "ErrorInfo":
        """An item that cannot be asked (a missing field, an unreadable image, a template that
        does not render): the one constructor for them."""
        return cls("bad_input", f"item {item_id}: {problem}", field=field)

    @classmethod
    def from_adapter(cls, exc: AdapterError) -> "ErrorInfo":
        """A request that failed for good (an `AdapterError` after its retries)."""
        return cls(exc.kind, exc.message, status=exc.status, attempts=exc.attempts,
                   reason=exc.reason or None, stopped_run=bool(exc.fatal))

    def to_json(self) -> dict[str, Any]:
        """The error as a samples.jsonl line stores it."""
        out: dict[str, Any] = {"type": self.type, "status": self.status,
                               "attempts": self.attempts}
        if self.type == "bad_input" or self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        if self.reason is not None:
            out["reason"] = self.reason
        if self.stopped_run:
            out["stopped_run"] = True
        if self.extra:
            out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ErrorInfo":
        """An `error` object read back; SamplesError names the line and the field."""
        if not isinstance(data, dict):
            raise SamplesError(f"{where}: field 'error' must be an object or null, "
                               f"got {_kind(data)}")
        extra = _check_types(data, _ERROR_TYPES, where, "error.")
        for name in ("type", "message"):
            if name not in data:
                raise SamplesError(f"{where}: missing field error.{name}")
        known = {k: v for k, v in data.items() if k in _ERROR_TYPES}
        return cls(**known, extra=extra)


# When a field is written: always; when the record is answered (it has a response or a reading of
# one); when it is answered in logprobs mode (even as null) or set; when it is set (not None); when
# it is true.
ALWAYS, ANSWERED, LOGPROBS, IF_SET, IF_TRUE = "always", "answered", "logprobs", "if_set", "if_true"


@dataclass(slots=True)
class SampleRecord:
    """One line of samples.jsonl: the item, what was asked, the raw answer and its reading.

    Built by the runner (`runner.prepare_request`, then `run.records.answered` or an `ErrorInfo`),
    the batch path and the judge; read back with `from_json`. slots: the end of a run holds one
    per item (about 100k) in its slim view (harness.report.view).
    """

    item_id: str  # <image_id>:<question_type>, plus the rotation in a circular run
    image_id: str
    dataset: str
    question_type: str
    options: dict[str, str]  # letter → option text, as shown
    template: str | None = None
    template_sha256: str | None = None
    gold: str | None = None
    option_order: list[int] | None = None  # original option indices in the order shown
    rotation: int | None = None
    data_warning: str | None = None
    error: ErrorInfo | None = None
    examples: list[str] | None = None  # few-shot: the examples' item ids
    prompt: list[dict[str, Any]] | None = None  # the exact messages (image as a placeholder)
    image: dict[str, Any] | None = None  # the image sent: mime, sha256, size, resized
    response: str | None = None  # the raw response, untouched
    finish_reason: str | None = None
    extracted: str | None = None  # the letter the robust parser read (None: invalid)
    rule: str | None = None  # the parser rule that decided
    correct: bool | None = None  # robust scorer
    correct_official: bool | None = None  # the paper's scorer
    answer_mode: str | None = None  # written for choice and logprobs (free is the default)
    answer_text: str | None = None  # choice: the answer the constraint produced
    constraint_followed: bool | None = None  # choice: the reply was one of the letters
    parsed: dict[str, Any] | None = None  # logprobs: the parser's reading of the text
    letter_probs: dict[str, float] | None = None  # logprobs: renormalised over the letters
    letter_mass: float | None = None  # logprobs: probability on the letters before that
    letter_probs_problem: str | None = None  # logprobs: why there are no letter_probs
    answer_token: dict[str, Any] | None = None  # logprobs: the token the letters were read at
    usage: dict[str, Any] | None = None  # the server's usage object, untouched
    latency_s: float | None = None
    attempts: int | None = None
    cached: bool = False  # answered from the response cache
    request_sha256: str | None = None  # the cache key
    redacted: bool = False  # the API key the server echoed was removed from the response
    judge_raw: str | None = None  # the judge's reply, raw
    judge: dict[str, Any] | None = None  # the judge's model and verdict (or error)
    rule_before_judge: str | None = None  # the parser's verdict on a record the judge decided
    batch_id: str | None = None  # the batch that answered (or failed) it
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] | None = None  # keys this version does not know, kept as read

    @property
    def letters(self) -> str:
        """The option letters, in display order."""
        return "".join(self.options)

    def to_json(self) -> dict[str, Any]:
        """The line as samples.jsonl stores it (`schema_version` first)."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        answered = self.response is not None or self.rule is not None
        logprobs = answered and self.answer_mode == "logprobs"
        for name, when in _WRITTEN:
            value = getattr(self, name)
            if when == ALWAYS or (when == ANSWERED and answered) or (when == IF_TRUE and value) \
                    or (when in (IF_SET, LOGPROBS) and value is not None) or (
                    when == LOGPROBS and logprobs):
                out[name] = value.to_json() if isinstance(value, ErrorInfo) else value
        if self.extra:
            out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str, *, pending: bool = False) -> "SampleRecord":
        """A line read back (any version up to SCHEMA_VERSION); SamplesError names `where` (the
        file and line) and the field. `pending`: a batch's record not answered yet."""
        if not isinstance(data, dict):
            raise SamplesError(f"{where}: not a JSON object")
        version = check_version(data, where)
        extra = _check_types(data, _RECORD_TYPES, where)
        missing = [k for k in REQUIRED_FIELDS if k not in data]
        error = data.get("error")
        if error is None and not pending:
            missing += [k for k in SCORED_FIELDS if k not in data]
        if missing:
            raise SamplesError(f"{where}: missing field(s) {', '.join(missing)}")
        if not all(type(v) is str for v in data["options"].values()) or (
                not data["options"] and error is None):  # an answer is to one of the options
            raise SamplesError(f"{where}: field 'options' must map letters to texts")
        _check_nested(data, where)
        record = _build_record(data)
        record.schema_version, record.extra = version, extra
        if error is not None:
            record.error = ErrorInfo.from_json(error, where)
        return record

    def supersedes(self, previous: "SampleRecord | None") -> bool:
        """Whether this later record of an item replaces `previous` (an error never replaces an
        answer)."""
        return previous is None or previous.error is not None or self.error is None


def _builder(cls: type) -> Any:
    """A function that makes a `cls` from a dict of its fields (absent ones get their defaults)
    without `__init__`: binding ~40 keyword arguments costs ~5 µs a record, this ~1 µs, which is
    0.4 s at the end of a 96k-question run, read twice."""
    defaults = {f"_{f.name}": f.default for f in fields(cls)}
    body = "".join(f"    o.{f.name} = get({f.name!r}, _{f.name})\n" for f in fields(cls))
    namespace = {"cls": cls, **defaults}
    exec(f"def build(d):\n    o = object.__new__(cls)\n    get = d.get\n{body}    return o\n",
         namespace)
    return namespace["build"]


REQUIRED_FIELDS = ("item_id", "image_id", "dataset", "question_type", "options")
SCORED_FIELDS = ("correct", "correct_official", "rule")  # in every record without an error
_WHEN = {"examples": IF_SET, "prompt": IF_SET, "image": IF_SET, "answer_mode": IF_SET,
         "answer_text": IF_SET, "constraint_followed": IF_SET, "parsed": LOGPROBS,
         "letter_probs": LOGPROBS, "letter_mass": LOGPROBS, "letter_probs_problem": IF_SET,
         "answer_token": IF_SET, "redacted": IF_TRUE, "judge_raw": IF_SET, "judge": IF_SET,
         "rule_before_judge": IF_SET, "batch_id": IF_SET,
         **dict.fromkeys(("response", "finish_reason", "extracted", "rule", "correct",
                          "correct_official", "usage", "latency_s", "attempts", "cached",
                          "request_sha256"), ANSWERED)}
_WRITTEN = [(f.name, _WHEN.get(f.name, ALWAYS)) for f in fields(SampleRecord)
            if f.name not in ("schema_version", "extra")]


def _json_types(hint: Any) -> tuple[type, ...]:
    """The Python types of the JSON values a field of type `hint` may hold."""
    if hint is Any:
        return (object,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _json_types(arg))
    if origin is not None:
        return (origin,)
    if hint is float:
        return (float, int)
    if hint is ErrorInfo:
        return (dict,)
    return (hint,)


def _field_types(cls: type) -> dict[str, frozenset[type]]:
    hints = typing.get_type_hints(cls)
    return {f.name: frozenset(_json_types(hints[f.name])) for f in fields(cls)
            if f.name != "extra"}


_build_record = _builder(SampleRecord)
_ERROR_TYPES = _field_types(ErrorInfo)
_RECORD_TYPES = _field_types(SampleRecord)
_RECORD_TYPES.pop("schema_version")  # checked (and read) by check_version
_LINE_TYPES = {"schema_version": frozenset({int}), **_RECORD_TYPES}


def record_field_types() -> dict[str, frozenset[type]]:
    """Each field of a samples.jsonl line, in the order written (`schema_version` first), with
    the JSON value types it may hold (the columns of samples.parquet)."""
    return _LINE_TYPES


_NAMES = {str: "a string", dict: "an object", list: "a list", bool: "true or false",
          int: "an integer", float: "a number", type(None): "null"}


def _check_types(data: dict[str, Any], types: dict[str, frozenset[type]], where: str,
                 prefix: str = "") -> dict[str, Any] | None:
    """Check each known field's JSON type (`type(value) in allowed`: JSON values have exact
    types, which also keeps `true` out of an integer field); return the unknown keys, or None."""
    extra: dict[str, Any] | None = None
    for key, value in data.items():
        allowed = types.get(key)
        if allowed is None:
            if key != "schema_version":
                extra = {} if extra is None else extra
                extra[key] = value
        elif type(value) not in allowed and object not in allowed:
            expected = " or ".join(name for t, name in _NAMES.items() if t in allowed
                                   and not (t is int and float in allowed))
            raise SamplesError(f"{where}: field '{prefix}{key}' must be {expected}, "
                               f"got {_kind(value)}")
        elif type(value) is int and not -INT64 <= value < INT64:  # a parquet column holds it
            raise SamplesError(f"{where}: field '{prefix}{key}' is out of range ({value})")
    return extra


def _check_nested(data: dict[str, Any], where: str) -> None:
    """What scoring reads inside the free-form fields: the judge's model, the letters'
    probabilities as numbers."""
    judge = data.get("judge")
    if judge is not None and type(judge.get("model")) is not str:
        raise SamplesError(f"{where}: field 'judge.model' must be a string")
    probs = data.get("letter_probs")
    if probs is not None and not all(type(v) in (int, float) for v in probs.values()):
        raise SamplesError(f"{where}: field 'letter_probs' must map letters to numbers")


def _kind(value: Any) -> str:
    return "null" if value is None else _NAMES.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# summary.json


class Stat(TypedDict):
    """One group's accuracy under one scorer: the paper's basic bootstrap over questions (ci_low,
    ci_high, pm) and the interval clustered by image, with chance on the same items."""

    n: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    pm: float | None
    cluster_ci_low: float | None
    cluster_ci_high: float | None
    cluster_ci_method: str | None
    chance: float | None


Scorers = dict[str, dict[str, Stat]]  # scorer (official, robust) → group → Stat


class RuleStat(TypedDict):
    """How often a parser rule decided, and how often it was right."""

    n: int
    accuracy: float


class LetterCounts(TypedDict):
    """How often a letter is gold, is predicted, and is predicted rightly."""

    gold: int
    predicted: int
    correct: int


class LetterBias(TypedDict):
    """The letter-bias table: per letter, and the answers with no letter."""

    letters: dict[str, LetterCounts]
    invalid: int


class Circular(TypedDict):
    """CircularEval: an item is right only if every rotation of its options is."""

    n_items: int
    n_incomplete: int
    scorers: Scorers
    per_rotation: dict[str, RuleStat]


class Usage(TypedDict):
    """Requests and tokens the server reported, over the run's final records."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    requests_without_usage: int
    cache_hits: int


class Latency(TypedDict):
    """Latency percentiles in seconds over the requests that have one."""

    n: int
    p50: float
    p90: float
    p99: float


class UsageSummary(TypedDict):
    """summary.json's usage, latency and cost (harness.score.usage)."""

    usage: Usage
    latency_s: Latency | None
    cost_usd: float | None
    cost_complete: bool
    pricing: dict[str, Any] | None


class JudgeUsage(TypedDict):
    """summary.json's `judge_usage`: the LLM judge's requests, tokens and cost, apart from the
    model's (harness.score.usage)."""

    model: str | None
    usage: Usage
    cost_usd: float | None
    cost_complete: bool
    pricing: dict[str, Any] | None


class JudgedAccuracy(TypedDict):
    """Robust accuracy and invalid rate, with or without the judge's verdicts."""

    accuracy: float
    invalid_rate: float


# Accuracy and invalid rate without and with the LLM judge ("with" is a keyword: this syntax).
JudgeSummary = TypedDict("JudgeSummary", {"model": str, "n_asked": int, "n_decided": int,
                                          "n_errors": int, "without": JudgedAccuracy,
                                          "with": JudgedAccuracy})


class _Scored(TypedDict):
    """What `scoring.summarize` computes from the records alone."""

    schema_version: int
    n_records: int
    n_scored: int
    n_errors: int
    errors_by_type: dict[str, int]
    bad_input_by_field: dict[str, int]
    n_data_warnings: int
    invalid_rate: float | None
    n_invalid: int
    rules: dict[str, RuleStat]
    scorers: Scorers
    letter_bias: LetterBias
    bootstrap: dict[str, Any]
    finish_reasons: dict[str, int]
    n_redacted: int


class Summary(_Scored, total=False):
    """summary.json: `summarize`'s numbers plus the sections `report.finalize` adds (usage and
    cost always; the others when the run has them)."""

    circular: Circular
    judge: JudgeSummary
    judge_usage: JudgeUsage
    usage: Usage
    latency_s: Latency | None
    cost_usd: float | None
    cost_complete: bool
    pricing: dict[str, Any] | None
    estimate_check: dict[str, Any] | None
    answer_mode: dict[str, Any]  # harness.score.calibration.answer_mode_summary
    calibration: dict[str, Any]  # harness.score.calibration.calibration_summary


def summary_from_json(data: Any, where: str) -> Summary:
    """summary.json read back: a version this harness knows, with its core fields."""
    if not isinstance(data, dict):
        raise SamplesError(f"{where}: not a JSON object")
    check_version(data, where)
    missing = [k for k in ("n_records", "n_scored", "n_errors", "scorers") if k not in data]
    if missing:
        raise SamplesError(f"{where}: missing field(s) {', '.join(missing)}")
    data.setdefault("schema_version", 1)
    return typing.cast(Summary, data)
