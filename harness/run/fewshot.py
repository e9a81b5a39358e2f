"""Few-shot examples: a seeded bank of worked examples per template, and each item's choice.

The pool is read once, with images, and reduced while it streams to a *bank*: per selection group
(question type, source dataset, or one group for `random`) the `bank_size` distinct images whose
stable hash of (seed, item id) is smallest. Only the bank's images are kept and they are encoded
once, through the run's image feed, however many items show them. Each item then draws its k
examples from its group's bank, ranked by a stable hash of (seed, item id, example id): the same
choice on any machine, in any order, on resume and in every shard (the pool never depends on
`--shard`, `--limit` or `--question-types`). The evaluated image is never among its examples
(checked by id and by the hash of its bytes), nor, if asked, its source dataset.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from harness.adapters.base import ExampleImage
from harness.data.items import Example, Item, iter_examples
from harness.data.options_order import ROTATION_SEP
from harness.data.sources import DatasetLoadError, iter_rows, resolve_source
from harness.prompts import Shot, Template
from harness.run.feed import Encoded, encoded_batches

BANK_READ_BATCH = 16  # bank images encoded per hop to the feed's thread pool


class ExamplePoolError(ValueError):
    """The pool cannot be read, or holds too few examples for the template."""


@dataclass(frozen=True)
class BankEntry:
    """One example of a template's bank: its item and its image, encoded once for every shot."""
    item: Item
    image: Any  # EncodedImage

    @cached_property
    def example_image(self) -> ExampleImage:
        """The image as requests carry it: one object for every request that shows it."""
        return ExampleImage(self.image.data_url, self.image.url_sha256,
                            (self.image.width, self.image.height))

    def shot(self) -> Shot:
        """This example as a shot of the prompt (question, options, gold letter)."""
        assert self.item.gold_letter is not None  # the bank holds only items with a gold answer
        return Shot(self.item.image_id, self.item.question, self.item.option_map,
                    self.item.gold_letter)


class ExamplePool:
    """A template's bank of examples and the per-item choice from it."""

    def __init__(self, settings: dict[str, Any], bank: dict[str, list[BankEntry]]):
        self.settings = settings
        self.bank = bank

    def group_of(self, item: Item) -> str:
        """The bank group an item draws its shots from, by the template's `select`."""
        select = self.settings["select"]
        return (item.question_type if select == "same_question_type"
                else item.dataset if select == "same_dataset" else "all")

    def choose(self, item: Item, image_sha256: str | None) -> list[BankEntry]:
        """The item's k examples; raises ExamplePoolError when too few are eligible."""
        k, seed = self.settings["k"], self.settings["seed"]
        base_id = item.item_id.split(ROTATION_SEP)[0]  # every rotation shows the same examples
        eligible = [e for e in self.bank.get(self.group_of(item), [])
                    if e.item.image_id != item.image_id and e.image.sha256 != image_sha256
                    and not (self.settings["exclude_same_dataset"]
                             and e.item.dataset == item.dataset)]
        if len(eligible) < k:
            raise ExamplePoolError(f"the few-shot pool has {len(eligible)} eligible example(s) "
                                   f"for this item, the template asks for {k}")
        eligible.sort(key=lambda e: _rank(seed, base_id, e.item.item_id))
        return eligible[:k]

    def example_images(self, chosen: list[BankEntry]) -> dict[str, ExampleImage]:
        """The encoded images of the chosen shots, by image id, for the request."""
        return {e.item.image_id: e.example_image for e in chosen}


def _rank(*parts: Any) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def pool_source(template: Template, run_source):
    """Where the template's examples come from: the run's dataset, or the one `pool` names."""
    assert template.examples is not None  # called for few-shot templates only
    pool = template.examples["pool"]
    if pool == "run":
        return run_source
    if pool not in ("sample", "hub") and not Path(pool).is_absolute():
        beside = Path(template.path).parent / pool
        pool = str(beside) if beside.exists() else pool
    try:
        return resolve_source(pool, None)
    except (DatasetLoadError, ValueError, OSError) as exc:
        raise ExamplePoolError(f"template {template.name!r}: field examples/pool: {exc}") from exc


def build_pool(template: Template, source, *, datasets: list[str] | None,
               include_excluded: bool, encode: Callable[[Example], Encoded]) -> ExamplePool:
    """Stream the pool once, keep the bank, encode the bank's images once each."""
    settings = template.examples
    assert settings is not None  # called for few-shot templates only
    pool = ExamplePool(settings, {})
    size, seed = settings["bank_size"], settings["seed"]
    heaps: dict[str, list[tuple[bytes, str, Item, Example]]] = {}
    try:
        for example in iter_examples(iter_rows(source), datasets=datasets,
                                     include_excluded=include_excluded):
            if example.image_problem or not example.image_bytes:
                continue
            best: dict[str, tuple[bytes, Item]] = {}  # one item per image and group
            for item in example.items:
                if item.problem or item.gold_index is None:
                    continue
                candidate = (_rank(seed, "bank", item.item_id), item)
                group = pool.group_of(item)
                if group not in best or candidate[0] < best[group][0]:
                    best[group] = candidate
            for group, (rank, item) in best.items():
                heap = heaps.setdefault(group, [])  # max-heap by rank, as negated bytes
                entry = (bytes(255 - b for b in rank), item.item_id, item, example)
                if len(heap) < size:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    heapq.heapreplace(heap, entry)
    except (DatasetLoadError, OSError, ValueError) as exc:
        raise ExamplePoolError(f"template {template.name!r}: cannot read the few-shot pool: "
                               f"{exc}") from exc
    if not heaps:
        raise ExamplePoolError(f"template {template.name!r}: the few-shot pool holds no usable "
                               "examples")
    images = {}  # image id → encoded, each bank image once whatever its groups
    unique = {ex.image_id: ex for heap in heaps.values() for *_, ex in heap}
    for batch in encoded_batches(unique.values(), lambda ex: [ex], encode,
                                 batch_items=BANK_READ_BATCH):
        for (ex,), image, problem in batch:
            if image is not None:
                images[ex.image_id] = image
    pool.bank = {group: [BankEntry(item, images[ex.image_id])
                         for _, _, item, ex in sorted(heap, reverse=True)
                         if ex.image_id in images]
                 for group, heap in heaps.items()}
    return pool


def shared_encodings(pools: list[ExamplePool | None]) -> dict[str, Encoded]:
    """The bank images of pools drawn from the run's own dataset, by image id: the run's feed
    reuses them for the same images as evaluated items, so no image is encoded twice."""
    return {e.item.image_id: (e.image, None) for pool in pools
            if pool is not None and pool.settings["pool"] == "run"
            for entries in pool.bank.values() for e in entries}


def describe(pool: ExamplePool) -> dict[str, Any]:
    """What the manifest records: the settings and the bank's example ids per group."""
    return {**pool.settings,
            "bank": {g: [e.item.item_id for e in entries] for g, entries in sorted(pool.bank.items())}}
