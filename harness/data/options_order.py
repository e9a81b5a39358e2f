"""Option-order robustness as a data transform on items: seeded shuffles and circular rotations.

Both are explicit run options (never inferred from a dataset name). A transformed item keeps the
original option indices in the order shown (`option_order`), so every record says what was asked;
gold follows its option. Circular evaluation turns one item into one item per rotation, with ids
`<image_id>:<question_type>#r<k>`.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Iterable, Iterator, Sequence

from harness.data.items import Example, Item

ROTATION_SEP = "#r"


def reorder(item: Item, order: Sequence[int], *, item_id: str | None = None,
            rotation: int | None = None) -> Item:
    """`item` with its options shown in `order` (indices into its current options)."""
    shown = item.option_order or tuple(range(len(item.options)))
    return replace(item, item_id=item_id or item.item_id,
                   options=tuple(item.options[i] for i in order),
                   gold_index=(None if item.gold_index is None
                               else list(order).index(item.gold_index)),
                   option_order=tuple(shown[i] for i in order), rotation=rotation)


def shuffled(item: Item, seed: int) -> Item:
    """A permutation from an RNG seeded by (seed, item id): the same whatever the run order."""
    order = list(range(len(item.options)))
    random.Random(f"{seed}:{item.item_id}").shuffle(order)
    return reorder(item, order)


def rotations(item: Item) -> list[Item]:
    """Every rotation of the options; in rotation k option i shows original option i + k."""
    n = len(item.options)
    return [reorder(item, [(i + k) % n for i in range(n)],
                    item_id=f"{item.item_id}{ROTATION_SEP}{k}", rotation=k) for k in range(n)]


def transform(examples: Iterable[Example], *, shuffle_seed: int | None = None,
              circular: bool = False) -> Iterator[Example]:
    """Apply the shuffle, then the rotations, to every scorable item (others pass unchanged)."""
    for example in examples:
        if shuffle_seed is not None or circular:
            items: list[Item] = []
            for item in example.items:
                if item.problem or item.gold_index is None:
                    items.append(item)
                    continue
                if shuffle_seed is not None:
                    item = shuffled(item, shuffle_seed)
                items.extend(rotations(item) if circular else [item])
            example.items = items
        yield example
