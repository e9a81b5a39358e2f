"""uBench rows → multiple-choice items, streamed from the Hub, a local copy or the bundled sample.

The protocol facts (question types, Held et al. 2010 mapping, default filter, gold index) follow the
official code; see PROTOCOL.md in the shared notes and README.md.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

HUB_REPO = "jnirschl/uBench"
HUB_REVISION = "3f2c5b590bc7a208d5b60f3527ce4c76a331aa2b"
HUB_SPLIT = "test"

QUESTION_TYPES = ("classification", "domain", "subdomain", "modality", "submodality", "stain")
COARSE_TYPES = QUESTION_TYPES[1:]
FINE_TYPE = "classification"
LETTERS = "ABCDEFGH"

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

SAMPLE_PATH = Path(__file__).parent / "sample_data" / "ubench-sample.parquet"


class DatasetLoadError(Exception):
    """The dataset as a whole could not be opened (one clear message, not a traceback)."""


@dataclass(frozen=True)
class DatasetSource:
    """Where rows come from, and the revision that goes into the manifest."""

    kind: str  # "hub" | "local" | "sample"
    location: str
    revision: str

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "location": self.location, "revision": self.revision}


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
    # Set by harness.options_order: original option indices in the order shown, and the rotation.
    option_order: tuple[int, ...] | None = None
    rotation: int | None = None

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    @property
    def gold_letter(self) -> str | None:
        return None if self.gold_index is None else LETTERS[self.gold_index]

    @property
    def option_map(self) -> dict[str, str]:
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
# Sources


def resolve_source(dataset: str, revision: str | None = None) -> DatasetSource:
    """Turn the `--dataset` value (`sample`, `hub` or a path) into a source."""
    if dataset == "sample":
        digest = hashlib.sha256(SAMPLE_PATH.read_bytes()).hexdigest()[:16]
        return DatasetSource("sample", str(SAMPLE_PATH), f"sample-sha256:{digest}")
    if dataset == "hub":
        return DatasetSource("hub", HUB_REPO, revision or HUB_REVISION)
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DatasetLoadError(
            f"--dataset {dataset!r}: not 'sample', 'hub', or an existing file or folder"
        )
    return DatasetSource("local", str(path.resolve()), revision or _local_fingerprint(path))


def _local_fingerprint(path: Path) -> str:
    """A cheap content fingerprint (names and sizes of the data files) for a local copy."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if f != path else f.name}:{f.stat().st_size}\n".encode())
    return f"local-sha256:{h.hexdigest()[:16]}"


COUNT_COLUMNS = ["image_id", "dataset", "stain", "questions"]


def iter_rows(source: DatasetSource, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Stream raw uBench rows with the image left undecoded as `{bytes, path}`.

    `columns` reads only those columns (cheap for Parquet; used to count items up front).
    """
    try:
        ds = _open(source, columns)
    except DatasetLoadError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one sentence
        raise DatasetLoadError(f"could not load dataset from {source.location}: {exc}") from exc
    index = 0
    rows = iter(ds)
    try:
        for index, row in enumerate(rows):
            yield row
    except Exception as exc:
        raise DatasetLoadError(
            f"could not read row {index + 1} of {source.location}: {exc}") from exc
    finally:
        rows.close()  # a stream stopped early (--limit) is released now, not at exit


def _open(source: DatasetSource, columns: list[str] | None = None):
    if source.kind != "hub":  # the bundled sample or a local copy
        parquet = parquet_files(Path(source.location))
        if parquet:
            return _ParquetRows(parquet, columns)
    import datasets

    if source.kind == "hub":
        ds = datasets.load_dataset(
            HUB_REPO, split=HUB_SPLIT, revision=source.revision, streaming=True
        )
    else:
        ds = _open_local(Path(source.location))
    if columns:
        ds = ds.select_columns([c for c in columns if c in (ds.features or columns)])
    if "image" in (ds.features or {}):
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").exists()
                              or (path / "dataset_dict.json").exists())


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a local copy ([] for a `save_to_disk` folder or Arrow shards)."""
    if _is_saved_dataset(path):
        return []
    return [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))


class _ParquetRows:
    """Rows of local Parquet files, read with pyarrow one batch at a time.

    Not through datasets' streaming reader: a stream it leaves half-read (any --limit) makes the
    process hang or abort at exit with pyarrow 26 (apache/arrow#45214, fragments made from Python
    file objects). The rows are the same: structs as dicts, the image as `{bytes, path}`.
    """

    def __init__(self, files: list[Path], columns: list[str] | None, batch_size: int = 64):
        import pyarrow.parquet as pq

        self.files = [(f, pq.read_schema(f).names) for f in files]  # reads footers: fails early
        self.columns = columns
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        for path, names in self.files:
            columns = [c for c in self.columns if c in names] if self.columns else None
            # One file open at a time, nothing pre-buffered: memory stays at about one batch.
            parquet = pq.ParquetFile(path, pre_buffer=False)
            for batch in parquet.iter_batches(self.batch_size, columns=columns):
                yield from batch.to_pylist()
            parquet.close()


def _open_local(path: Path):
    import datasets

    if _is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if HUB_SPLIT not in loaded:
                raise DatasetLoadError(f"{path}: saved DatasetDict has no {HUB_SPLIT!r} split")
            loaded = loaded[HUB_SPLIT]
        return loaded.to_iterable_dataset()
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    arrow = [str(f) for f in files if f.suffix == ".arrow"]
    if arrow:
        return datasets.load_dataset("arrow", data_files=arrow, split="train", streaming=True)
    raise DatasetLoadError(
        f"{path}: no Parquet files, Arrow shards or save_to_disk folder found"
    )


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
    elif len(options) > len(LETTERS):
        problem = f"field '{field_prefix}.options': {len(options)} options, at most {len(LETTERS)}"
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
