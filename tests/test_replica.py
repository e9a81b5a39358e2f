"""The full-size replica generator, at small scale, read back through the real loader."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from harness.data.items import COARSE_TYPES, EXCLUDED_BY_DEFAULT, iter_examples
from harness.data.sources import iter_rows, resolve_source
from harness.data.synthetic import (
    REPLICA_DATASETS,
    REPLICA_ROWS,
    all_label_names,
    make_row,
    replica_label_names,
    replica_plan,
    replica_profile,
    replica_row,
    ubench_features,
    write_replica,
)
from tests.conftest import ROOT, read_jsonl, ubench


def test_the_plan_has_the_real_row_and_item_counts():
    plan = replica_plan()
    assert len(plan) == REPLICA_ROWS == 17_315
    assert sorted(plan) != plan  # datasets are interleaved, so any prefix is a mixture
    images = {e[0] if isinstance(e[0], str) else e[0][0]: e[1] for e in REPLICA_DATASETS}
    paper = sum(n for name, n in images.items() if name not in EXCLUDED_BY_DEFAULT)
    null_stain = sum(e[1] for e in REPLICA_DATASETS if replica_profile(e)[1]["stain"] is None)
    assert paper == 16_130  # one fine-grained question per image
    assert paper * len(COARSE_TYPES) - null_stain == 79_716  # coarse questions in the paper


def test_a_row_depends_only_on_its_index():
    labels = replica_label_names()
    plan = replica_plan()
    assert replica_row(7, plan[7], labels) == replica_row(7, plan[7], labels)
    assert replica_row(7, plan[7], labels)["image_id"] != replica_row(8, plan[8], labels)["image_id"]


def test_small_replica_loads_like_a_hub_copy(tmp_path):
    out = tmp_path / "replica"
    paths = write_replica(out, 50, workers=2, rows_per_shard=20, row_group=8)
    assert [p.name for p in paths] == [f"ubench-replica-0000{k}-of-00003.parquet" for k in range(3)]
    examples = list(iter_examples(iter_rows(resolve_source(str(out))), include_excluded=True))
    assert len(examples) == 50
    items = [i for ex in examples for i in ex.items]
    assert {i.question_type for i in items} == {"classification", *COARSE_TYPES}
    assert all(i.problem is None and i.gold_letter for i in items)
    assert 5 * 50 <= len(items) <= 6 * 50
    kinds = {ex.image_bytes[:3] for ex in examples}
    assert kinds == {b"\x89PN", b"\xff\xd8\xff"}  # PNG and JPEG, as stored
    sizes = [Image.open(io.BytesIO(ex.image_bytes)).size for ex in examples]
    assert min(map(max, sizes)) < 100 and max(map(max, sizes)) >= 1024  # realistic spread
    # Written in parallel or not, in shards of any size, row i is the same.
    serial = tmp_path / "serial"
    write_replica(serial, 10, workers=1, rows_per_shard=10)
    again = list(iter_examples(iter_rows(resolve_source(str(serial))), include_excluded=True))
    assert [e.image_id for e in again] == [e.image_id for e in examples[:10]]
    assert np.all([a.image_bytes == b.image_bytes for a, b in zip(again, examples)])


def test_cli_runs_on_a_replica_folder(tmp_path):
    out = tmp_path / "replica"
    write_replica(out, 12, workers=1)
    ubench("run", "--model", "random", "--dataset", str(out), "--output", str(tmp_path / "run"),
           "--no-progress")
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert records and not any(r["error"] for r in records)
    assert {r["image"]["mime"] for r in records} <= {"image/png", "image/jpeg"}


def test_a_stream_stopped_early_in_a_large_parquet_copy_lets_the_process_exit(tmp_path):
    """--limit leaves a Parquet stream half-read; the process must still exit. With pyarrow 26 it
    hung or aborted at exit (apache/arrow#45214) once a row group was large."""
    import os
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = all_label_names()
    rng = np.random.default_rng(0)
    big = lambda _: (os.urandom(1 << 20), "png")  # noqa: E731 (bytes need not be a real image)
    rows = [make_row(rng, "kather_et_al_2016", labels, image_maker=big) for _ in range(200)]
    (tmp_path / "copy").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=ubench_features(labels).arrow_schema),
                   tmp_path / "copy" / "big.parquet", row_group_size=64, compression="none")
    del rows
    code = ("from harness.data.items import iter_examples\n"
            "from harness.data.sources import iter_rows, resolve_source\n"
            f"source = resolve_source({str(tmp_path / 'copy')!r})\n"
            "print(sum(len(e.items) for e in iter_examples(iter_rows(source), limit=7)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert (proc.returncode, proc.stdout.strip()) == (0, "7"), proc.stderr[-2000:]
