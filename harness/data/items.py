"""uBench rows → multiple-choice items: the protocol's question types, filters and gold index.

The protocol facts (question types, Held et al. 2010 mapping, default filter, gold index) follow the
official code; see PROTOCOL.md in the shared notes and README.md.
"""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

QUESTION_TYPES = ("classification", "domain", "subdomain", "modality", "submodality", "stain")
COARSE_TYPES = QUESTION_TYPES[1:]
FINE_TYPE = "classification"
LETTERS = string.ascii_uppercase  # option letters, the one alphabet (extract reads up to Z)
MAX_OPTIONS = 8  # uBench asks at most A-H

EXCLUDED_BY_DEFAULT = ("opencell", "sirinukunwattana_et_al_2016")
# The official fine-grained total leaves these two out.
FINE_TOTAL_EXCLUDED = ("eulenberg_et_al_2017_darkfield", "eulenberg_et_al_2017_epifluorescence")
PATHOLOGY_DATASETS = (
    "hussain_et_al_2019",
    "acevedo_et_al_2020",
    "jung_et_al_2022",
    "kather_et_al_2016",
    "kather_et_al_2018",
    "kather_et_al_2018_val7k",
    "nirschl_et_al_2018",
)
# Rows of Held et al. 2010 have a null `dataset`; their stain names the sub-dataset.
HELD_STAIN_TO_DATASET = {
    "H2B-mCherry": "held_et_al_2010_h2b",
    "GalT\u2013EGFP": "held_et_al_2010_galt",
    "GalT-EGFP": "held_et_al_2010_galt",
}


@dataclass(frozen=True)
class Item:
    """One multiple-choice question about one image."""

    item_id: str
    image_id: str
    dataset: str
    question_type: str
    question: str
    options: tuple[str, ...]
    gold_index: int | None
    # Set when the item cannot be scored (names the field); such items get an error record.
    problem: str | None = None
    # Set when the item is scored but something in the row disagrees (e.g. answer_idx).
    warning: str | None = None
    # Set by harness.data.options_order: original option indices in the order shown, and the rotation.
    option_order: tuple[int, ...] | None = None
    rotation: int | None = None

    @property
    def letters(self) -> str:
        """The option letters of this item, in display order."""
        return LETTERS[: len(self.options)]

    @property
    def gold_letter(self) -> str | None:
        """The letter of the correct option, None for an item without one."""
        return None if self.gold_index is None else LETTERS[self.gold_index]

    @property
    def option_map(self) -> dict[str, str]:
        """Letter → option text, as prompts show the options."""
        return dict(zip(self.letters, self.options))


@dataclass
class Example:
    """One image and the items asked about it; the image bytes are shared by all its items."""

    image_id: str
    dataset: str
    image_bytes: bytes | None
    items: list[Item] = field(default_factory=list)
    image_problem: str | None = None


# ---------------------------------------------------------------------------------------------
# Rows → items


def dataset_name(row: dict[str, Any]) -> str:
    """The source-dataset slug, with the Held et al. 2010 rows (null `dataset`) mapped by stain."""
    name = row.get("dataset")
    if name:
        return str(name)
    stain = row.get("stain")
    if stain in HELD_STAIN_TO_DATASET:
        return HELD_STAIN_TO_DATASET[stain]
    return "unknown"


def image_id_of(row: dict[str, Any], index: int) -> str:
    """The row's `image_id`, or one made from its position when the field is empty."""
    return str(row.get("image_id") or f"row-{index}")


def image_bytes_of(row: dict[str, Any]) -> bytes | None:
    """The row's undecoded image bytes (`image` is `{bytes, path}`), or None."""
    image = row.get("image")
    return image.get("bytes") if isinstance(image, dict) else None


def expand_row(row: dict[str, Any], index: int) -> Example:
    """Expand one row into its items; problems are recorded on the items, never raised."""
    image_id = image_id_of(row, index)
    ds_name = dataset_name(row)
    image_bytes = image_bytes_of(row)
    image_problem = None
    if image_bytes is None:
        image_problem = "field 'image': missing or has no bytes"
    example = Example(image_id, ds_name, image_bytes, image_problem=image_problem)

    questions = row.get("questions")
    if not isinstance(questions, dict):
        example.items.append(
            Item(f"{image_id}:questions", image_id, ds_name, "unknown", "", (), None,
                 problem="field 'questions': missing or not a struct")
        )
        return example
    for qtype in QUESTION_TYPES:
        q = questions.get(qtype)
        if not q or q.get("question") is None:
            continue  # null where the question type does not apply
        example.items.append(_make_item(image_id, ds_name, qtype, q))
    return example


def _make_item(image_id: str, ds_name: str, qtype: str, q: dict[str, Any]) -> Item:
    item_id = f"{image_id}:{qtype}"
    field_prefix = f"questions.{qtype}"
    options = q.get("options")
    answer = q.get("answer")
    problem = warning = None
    gold = None
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        problem = f"field '{field_prefix}.options': missing or not a list of strings"
        options = []
    elif len(options) > MAX_OPTIONS:
        problem = f"field '{field_prefix}.options': {len(options)} options, at most {MAX_OPTIONS}"
    elif answer not in options:
        problem = f"field '{field_prefix}.answer': {answer!r} is not among the options"
    else:
        gold = options.index(answer)  # as the official code derives it
        answer_idx = q.get("answer_idx")
        if answer_idx is not None and answer_idx != gold:
            warning = (
                f"field '{field_prefix}.answer_idx': {answer_idx} disagrees with "
                f"options.index(answer) = {gold}; scored against options.index(answer)"
            )
    return Item(item_id, image_id, ds_name, qtype, str(q.get("question")), tuple(options),
                gold, problem=problem, warning=warning)


def iter_examples(
    rows: Iterable[dict[str, Any]],
    *,
    datasets: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    limit: int | None = None,
    include_excluded: bool = False,
    shard: tuple[int, int] | None = None,
) -> Iterator[Example]:
    """Filter and expand rows lazily; `limit` counts items, not images (of this shard)."""
    wanted_ds = set(datasets) if datasets else None
    wanted_qt = set(question_types) if question_types else None
    if wanted_qt and not wanted_qt <= set(QUESTION_TYPES):
        raise ValueError(f"unknown question types: {sorted(wanted_qt - set(QUESTION_TYPES))}")
    remaining = limit
    for index, row in enumerate(rows):
        if remaining is not None and remaining <= 0:
            return
        if shard is not None and shard_of(image_id_of(row, index), shard[1]) != shard[0]:
            continue
        name = dataset_name(row)
        if wanted_ds is not None:
            if name not in wanted_ds:
                continue
        elif not include_excluded and name in EXCLUDED_BY_DEFAULT:
            continue
        example = expand_row(row, index)
        if wanted_qt is not None:
            example.items = [it for it in example.items if it.question_type in wanted_qt]
        if remaining is not None:
            example.items = example.items[:remaining]
            remaining -= len(example.items)
        if example.items:
            yield example


# ---------------------------------------------------------------------------------------------
# Shards: N machines split one run by image, so every image is read and encoded on one machine.


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` (1 ≤ K ≤ N) → (K, N)."""
    k, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        shard = (int(k), int(n))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 2/4") from None
    if not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N")
    return shard


def shard_of(image_id: str, n: int) -> int:
    """The shard (1..n) an image belongs to: a stable hash, the same on every machine."""
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1
