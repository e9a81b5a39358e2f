"""The end of a run keeps what it needs as it writes (no second read of samples.jsonl for the
summary): every file it writes must be what `ubench score` and `ubench report` recompute from the
run folder alone, on a fresh run and on a resumed one whose earlier records stay in the file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.report import samples_table
from harness.report.results import SAMPLES, SampleWriter
from harness.report.run_report import write_samples_parquet
from harness.report.view import LiveView, read_view
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench
from tests.responders import failing_stains, sample_oracle

SUMMARIES = ("summary.json", "summary.md")
REPORT = ("summary.csv", "report.html", "samples.parquet", "plots/accuracy_by_dataset.png",
          "plots/letter_confusion.png")


def assert_recomputed_alike(run_dir: Path, tmp_path: Path) -> None:
    """`ubench score` (summaries, then the report) and `ubench report` (the report, from
    summary.json) on copies of the folder write what the run wrote: the same bytes, and for
    samples.parquet the same table."""
    for command, remade in (("score", SUMMARIES + REPORT), ("report", REPORT)):
        copy = tmp_path / command
        shutil.copytree(run_dir, copy)
        for name in remade:
            (copy / name).unlink()
        ubench(command, str(copy))
        for name in remade:
            if name == "samples.parquet":
                table, again = pq.read_table(run_dir / name), pq.read_table(copy / name)
                assert table.schema == again.schema and table.equals(again), command
            else:
                assert (copy / name).read_bytes() == (run_dir / name).read_bytes(), \
                    f"{command}: {name} differs"


def test_a_fresh_and_a_resumed_run_end_as_the_folder_recomputes(tmp_path):
    out = tmp_path / "run"
    oracle = sample_oracle(wrong_every=4, invalid_every=7)
    flaky = failing_stains(oracle)

    with TestServer(flaky) as server:
        ubench("run", "--model", "vllm/x", "--base-url", server.base_url, "--output", str(out),
               "--max-attempts", "1", "--no-progress", check=False)
    first = read_jsonl(out / "samples.jsonl")
    failed = {r["item_id"] for r in first if r["error"]}
    assert failed and len(failed) < len(first)
    assert_recomputed_alike(out, tmp_path / "fresh")

    with TestServer(oracle) as server:  # the resume answers what failed; the errors stay above
        ubench("run", "--model", "vllm/x", "--base-url", server.base_url, "--output", str(out),
               "--no-progress")
    records = read_jsonl(out / "samples.jsonl")
    assert records[:len(first)] == first
    assert {r["item_id"] for r in records[len(first):]} == failed
    assert_recomputed_alike(out, tmp_path / "resumed")
    table = pq.read_table(out / "samples.parquet")
    assert table.num_rows == len(first) and "error" not in table["outcome"].to_pylist()


@pytest.mark.parametrize("spool_fails", [False, True])
def test_the_table_a_run_spools_is_the_table_its_samples_give(tmp_path, monkeypatch, spool_fails):
    """Spooled batches whose lines have different keys (an error, keys this version does not
    know), an item answered again in the same run, and lines an earlier invocation wrote:
    samples.parquet and the browser's samples from the run's spool equal what `ubench report`
    reads from samples.jsonl. When spooling fails (a full disk), the end makes the same table
    from samples.jsonl."""
    monkeypatch.setattr(samples_table, "SPOOL_RECORDS", 3)
    monkeypatch.setattr(samples_table, "PARQUET_BATCH", 4)
    if spool_fails:
        def no_space(*args, **kwargs):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(samples_table.pa.ipc, "new_stream", no_space)

    def line(i: int, failed: bool = False, **fields) -> dict:
        base = {"item_id": f"q{i}", "image_id": f"img{i % 3}", "dataset": "d",
                "question_type": "fine", "options": {"A": "a", "B": "b"}, "gold": "A"}
        if failed:
            return {**base, "error": {"type": "http", "status": 500, "attempts": 1,
                                      "message": "HTTP 500"}, **fields}
        return {**base, "error": None, "response": "A", "extracted": "A", "rule": "bare",
                "correct": i % 2 == 0, "correct_official": True, **fields}

    earlier = [line(0, failed=True), line(1, note=1)]
    this_run = [line(2, note="two"), line(3), line(0, latency_s=0.5),  # q0 answered now
                line(4, failed=True), line(5, note=[5]), line(4),  # q4 answered after failing
                line(6, later={"k": None})]  # spooled 3 by 3
    path = tmp_path / SAMPLES
    with SampleWriter(path) as writer:
        for data in earlier:
            writer.write(data)
    with SampleWriter(path) as writer:
        live = LiveView(writer)
        for data in this_run:
            writer.write(data)
    view = live.view()
    if spool_fails:
        assert view.spool is None and live.spool.broken
    else:
        assert view.spool is not None and len(view.spool.chunks) == 3
    keep = {"q0", "q4", "q6"}
    shown = write_samples_parquet(view, tmp_path / "run.parquet", keep)
    live.close()
    assert not (tmp_path / samples_table.SPOOL).exists()
    again = write_samples_parquet(read_view(tmp_path), tmp_path / "report.parquet", keep)
    table, expected = pq.read_table(tmp_path / "run.parquet"), \
        pq.read_table(tmp_path / "report.parquet")
    assert table.schema == expected.schema and table.equals(expected)
    assert shown == again and [s["id"] for s in shown] == ["q0", "q4", "q6"]
    # the latest record of each item, in file order
    assert table["item_id"].to_pylist() == ["q1", "q2", "q3", "q0", "q5", "q4", "q6"]
    assert table["note"].to_pylist() == ["1", "two", None, None, "[5]", None, None]
    assert table["later"].to_pylist()[-1] == '{"k":null}'
    assert table["outcome"].to_pylist()[3:6] == ["correct", "wrong", "correct"]
    assert pq.ParquetFile(tmp_path / "run.parquet").metadata.num_row_groups == 2
