"""Where uBench rows come from: the Hub at a pinned revision, a local copy or the bundled sample.

Rows are streamed with the image left undecoded; `harness.data.items` turns them into items.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

HUB_REPO = "jnirschl/uBench"
HUB_REVISION = "3f2c5b590bc7a208d5b60f3527ce4c76a331aa2b"
HUB_SPLIT = "test"
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
        """Where the dataset came from, for the manifest."""
        return {"kind": self.kind, "location": self.location, "revision": self.revision}


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


HUB_PROBE_TIMEOUT_S = 3.0


def check_hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> None:
    """Fail in one line, within seconds, when the Hub cannot be reached: `datasets` would retry
    for half a minute and print every attempt."""
    import os
    import socket
    from urllib.parse import urlsplit

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise DatasetLoadError(f"--dataset hub streams from the Hugging Face Hub, but {var} is "
                                   "set (offline); unset it, or pass a local copy as --dataset PATH")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        raise DatasetLoadError(f"--dataset hub: cannot reach the Hugging Face Hub at {endpoint} "
                               f"({exc.strerror or exc}); check the network, or pass a local copy "
                               "as --dataset PATH") from None


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
        # its per-attempt retry warnings would come before the one line a failure gives
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
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
