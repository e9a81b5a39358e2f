"""Shared fixtures: the loopback OpenAI-compatible server, the real rows, CLI runner helpers."""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.servers.testserver import TestServer

ROOT = Path(__file__).resolve().parents[1]

# A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so would
# every run the Ctrl-C tests start (an ignored signal stays ignored across exec). A handled one is
# reset to the default at exec, so the runs get Ctrl-C as they would from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _find_real10() -> Path:
    """shared/ sits beside the checkout (or above a worktree); UBENCH_REAL10 overrides."""
    if os.environ.get("UBENCH_REAL10"):
        return Path(os.environ["UBENCH_REAL10"])
    for parent in ROOT.parents:
        candidate = parent / "shared" / "ubench" / "real10"
        if candidate.exists():
            return candidate
    return ROOT.parent / "shared" / "ubench" / "real10"


REAL10 = _find_real10()

# `make test` installs every extra the suite uses (test, report, local) and the vLLM environment,
# and says so with UBENCH_TEST_COMPLETE=1: there a missing one fails its tests instead of skipping.
COMPLETE = os.environ.get("UBENCH_TEST_COMPLETE") == "1"


def need(module: str, reason: str):
    """Import `module`; without it skip, except under `make test`, which installed it: fail."""
    if COMPLETE:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own response cache, never the user's ~/.cache/ubench."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("UBENCH_CACHE_DIR", str(path))
    return path


@pytest.fixture
def server():
    """A fresh test server answering a seeded random letter; tests may swap `behaviour`."""
    with TestServer("random") as s:
        yield s


@pytest.fixture
def real10() -> Path:
    """../shared/ubench/real10 from the repository root (beside a CI clone too). Missing, the
    real-row tests are skipped on a laptop but fail in CI (`CI` set), where they must run."""
    if not (REAL10 / "questions.jsonl").exists():
        message = (f"the ten real uBench rows are not here ({REAL10}); they live in shared/, "
                   "outside the project, and are never committed")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REAL10


def ubench(*args: str, env: dict | None = None, check: bool = True, timeout: float = 300,
           subprocess_: bool = False):
    """Run the `ubench` CLI as a user does: in-process through click (fast), or in a subprocess
    where process-level behaviour matters (the command line recorded, signals)."""
    if subprocess_:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                              text=True, env=full_env, timeout=timeout, cwd=ROOT)
    else:
        import traceback
        from types import SimpleNamespace

        from click.testing import CliRunner

        from harness.cli import main

        result = CliRunner().invoke(main, list(args), env=env)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        proc = SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"ubench {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def build_real10_parquet(real10: Path, out: Path) -> Path:
    """The ten real rows as a local uBench copy (Parquet in the real schema, coarse questions null)."""
    import datasets as hf

    from harness.data.synthetic import ubench_features

    rows = []
    questions = [json.loads(line) for line in (real10 / "questions.jsonl").read_text().splitlines()]
    labels = sorted({q["answer"] for q in questions})
    for q in questions:
        image = (real10 / "images" / f"{q['image_id']}.png").read_bytes()
        rows.append({
            "image_id": q["image_id"], "image": {"bytes": image, "path": f"{q['image_id']}.png"},
            "label": labels.index(q["answer"]), "label_name": q["answer"], "dataset": q["dataset"],
            "domain": "pathology", "institution": None, "license": "CC-BY-SA-4.0",
            "microns_per_pixel": None, "modality": "light microscopy", "ncbitaxon_id": 9606,
            "ncbitaxon_name": "Homo sapiens", "pmid": None, "split": "test", "stain": "Giemsa",
            "subdomain": "hematology", "submodality": "brightfield microscopy", "synthetic": False,
            "captions": None,
            "questions": {
                "classification": {"question": q["question"], "options": q["options"],
                                   "answer": q["answer"], "answer_idx": q["answer_idx"],
                                   "id": q["image_id"], "name": "cell type"},
                "domain": None, "modality": None, "stain": None, "subdomain": None,
                "submodality": None,
            },
            "bbox": None, "polygon": None,
        })
    out.mkdir(parents=True, exist_ok=True)
    path = out / "real10.parquet"
    hf.Dataset.from_list(rows, features=ubench_features(labels)).to_parquet(str(path))
    return path


@pytest.fixture
def real10_dataset(real10, tmp_path) -> Path:
    return build_real10_parquet(real10, tmp_path / "real10")


def synthetic_rows(seed: int, n: int) -> list[dict]:
    """`n` synthetic rows in the real schema, to be spoiled by a test and written with
    `write_dataset`."""
    import numpy as np

    from harness.data.synthetic import all_label_names, make_row

    rng = np.random.default_rng(seed)
    return [make_row(rng, "kather_et_al_2016", all_label_names()) for _ in range(n)]


def write_dataset(rows: list[dict], folder: Path) -> Path:
    """`rows` as a local uBench copy (one Parquet file) in `folder`."""
    import datasets as hf

    from harness.data.synthetic import all_label_names, ubench_features

    folder.mkdir(parents=True, exist_ok=True)
    hf.Dataset.from_list(rows, features=ubench_features(all_label_names())).to_parquet(
        str(folder / "part.parquet"))
    return folder
