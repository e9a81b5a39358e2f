"""Check a run's selection against the dataset before anything is sent.

A mistyped `--datasets` or `--question-types` value would otherwise select nothing and "succeed";
duplicate `image_id` rows would give two items one id (one answer overwriting the other in the
summary). Both are input errors, named with what is valid.
"""
from __future__ import annotations

import difflib
from collections import Counter
from typing import Sequence

from harness.data.items import QUESTION_TYPES, dataset_name, image_id_of
from harness.data.sources import DatasetSource, iter_rows

# The source datasets of uBench (PROTOCOL.md), checked for `--dataset hub` without streaming it.
HUB_DATASETS = (
    "acevedo_et_al_2020", "burgess_et_al_2024_contour", "burgess_et_al_2024_eccentricity",
    "burgess_et_al_2024_texture", "colocalization_benchmark", "empiar_sbfsem",
    "eulenberg_et_al_2017_brightfield",
    "eulenberg_et_al_2017_darkfield", "eulenberg_et_al_2017_epifluorescence",
    "held_et_al_2010_galt", "held_et_al_2010_h2b", "hussain_et_al_2019", "icpr2020_pollen",
    "jung_et_al_2022", "kather_et_al_2016", "kather_et_al_2018", "kather_et_al_2018_val7k",
    "nirschl_et_al_2018", "nirschl_unpub_fluorescence", "opencell", "sirinukunwattana_et_al_2016",
    "tang_et_al_2019", "wong_et_al_2022", "wu_et_al_2023",
)
_SCAN_COLUMNS = ["image_id", "dataset", "stain"]


class SelectionError(ValueError):
    """The selection names something the dataset does not have, or the dataset is ambiguous."""


def check_selection(source: DatasetSource, datasets: Sequence[str] | None,
                    question_types: Sequence[str] | None) -> None:
    """Raise SelectionError for unknown names or duplicate image ids (local copies are scanned,
    reading only three small columns; the Hub's names are known)."""
    _check_names("--question-types", question_types, QUESTION_TYPES)
    if source.kind == "hub":
        _check_names("--datasets", datasets, HUB_DATASETS)
        return
    names: set[str] = set()
    ids: Counter = Counter()
    for index, row in enumerate(iter_rows(source, _SCAN_COLUMNS)):
        names.add(dataset_name(row))
        ids[image_id_of(row, index)] += 1
    _check_names("--datasets", datasets, sorted(names))
    doubled = sorted(i for i, n in ids.items() if n > 1)
    if doubled:
        shown = ", ".join(repr(i) for i in doubled[:5]) + (" …" if len(doubled) > 5 else "")
        raise SelectionError(f"{source.location}: {len(doubled)} image_id values appear in more "
                             f"than one row ({shown}); item ids would collide. Give every row "
                             "its own image_id")


def _check_names(option: str, wanted: Sequence[str] | None, valid: Sequence[str]) -> None:
    unknown = [w for w in wanted or () if w not in valid]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise SelectionError(f"{option}: unknown {', '.join(hints)}; valid: {', '.join(valid)}")
