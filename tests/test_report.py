"""The run report: files for pandas users, plots, and report.html opened in headless Chromium."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from harness.servers.testserver import TestServer
from tests.conftest import need, read_jsonl, ubench
from tests.responders import failing_stains, sample_oracle

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,2400"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run on the sample with right, wrong and invalid answers, made by `ubench run`."""
    out = tmp_path_factory.mktemp("report") / "run"
    with TestServer(sample_oracle(wrong_every=4, invalid_every=9)) as server:
        ubench("run", "--model", "vllm/reporter", "--base-url", server.base_url,
               "--output", str(out), "--no-progress")
    return out


def pct_pm(stat: dict, clustered: bool = False) -> str:
    if clustered:
        return (f"{100 * stat['accuracy']:.2f} [{100 * stat['cluster_ci_low']:.2f}, "
                f"{100 * stat['cluster_ci_high']:.2f}]")
    return f"{100 * stat['accuracy']:.2f} ± {100 * stat['pm']:.2f}"


def outcome_of(record: dict) -> str:
    if record["error"]:
        return "error"
    if record["rule"].startswith("invalid:"):
        return "invalid"
    return "correct" if record["correct"] else "wrong"


def test_run_writes_the_report_tables_and_plots(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_jsonl(run_dir / "samples.jsonl")

    csv = pd.read_csv(run_dir / "summary.csv")
    assert len(csv) == 2 * len(summary["scorers"]["robust"])
    for row in csv.itertuples():
        stat = summary["scorers"][row.scorer][row.group]
        assert row.evaluation == "standard" and row.n == stat["n"]
        for key in ("accuracy", "ci_low", "cluster_ci_high", "chance"):
            assert getattr(row, key) == pytest.approx(stat[key])

    samples = pd.read_parquet(run_dir / "samples.parquet")
    assert len(samples) == len(records) == 136
    assert set(samples["outcome"]) == {"correct", "wrong", "invalid"}
    first = samples.set_index("item_id").loc[records[0]["item_id"]]
    assert first["response"] == records[0]["response"]
    assert json.loads(first["options"]) == records[0]["options"]

    for name in ("accuracy_by_dataset.png", "letter_confusion.png"):
        with Image.open(run_dir / "plots" / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200

    page = (run_dir / "report.html").read_text()
    # self-contained: nothing is fetched when the file is opened
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    images = {r["image_id"] for r in records}
    assert page.count("data:image/jpeg;base64,") == len(images)  # one thumbnail per image
    assert page.count("data:image/png;base64,") == 2  # the two plots
    assert "Thumbnails unavailable" not in page


def test_report_says_when_the_run_folder_has_no_thumbnails(run_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    (moved / "thumbnails.jsonl").unlink()
    proc = ubench("report", str(moved), "--max-samples", "10")
    assert "Report written to" in proc.stdout
    page = (moved / "report.html").read_text()
    assert "Thumbnails unavailable: this run folder has no thumbnails.jsonl" in page
    assert "data:image/jpeg" not in page
    assert "Showing a fixed sample of 10 of 136 records" in page
    samples = json.loads(re.search(r'id="samples-data">(.*?)</script>', page).group(1))
    assert len(samples) == 10


def test_report_of_a_run_with_failed_requests(tmp_path):
    out = tmp_path / "failing"
    flaky = failing_stains(sample_oracle())

    with TestServer(flaky) as server:
        ubench("run", "--model", "vllm/x", "--base-url", server.base_url, "--output", str(out),
               "--max-attempts", "1", "--no-progress", check=False)
    records = read_jsonl(out / "samples.jsonl")
    failed = [r for r in records if r["error"]]
    assert failed and all(r["question_type"] == "stain" for r in failed)
    samples = pd.read_parquet(out / "samples.parquet")
    assert (samples["outcome"] == "error").sum() == len(failed)
    assert samples.loc[samples["outcome"] == "error", "correct"].isna().all()
    page = (out / "report.html").read_text()
    browser_data = json.loads(re.search(r'id="samples-data">(.*?)</script>', page).group(1))
    assert sum(s["outcome"] == "error" and "HTTP 500" in s["error"] for s in browser_data) == \
        len(failed)
    ubench("report", str(out), "--no-thumbnails")
    assert "Thumbnails unavailable: left out (--no-thumbnails)" in (out / "report.html").read_text()


# ---------------------------------------------------------------------------------------------
# Headless Chromium


def _install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver once; the reason when that is impossible."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "chromium is not installed and apt-get (as root) is not available to install it"
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out"
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}"
    return None if shutil.which("chromium") and shutil.which("chromedriver") else \
        "chromium or chromedriver still missing after apt-get install"


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium driven by Selenium (Debian's chromium + chromium-driver)."""
    webdriver = need("selenium.webdriver",
                     reason="selenium is not installed (pip install -e '.[test]')")
    reason = _install_chromium()
    if reason:
        pytest.skip(f"headless Chromium unavailable: {reason}")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in CHROMIUM_ARGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def test_report_in_headless_chromium_shows_the_summary_and_filters_samples(run_dir, browser,
                                                                           tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_jsonl(run_dir / "samples.jsonl")
    browser.get((run_dir / "report.html").as_uri())

    # the paper-layout table shows exactly the numbers of summary.json
    cells = browser.find_elements(By.CSS_SELECTOR, "table.headline td[data-group]")
    assert len(cells) == 3 * 9
    for cell in cells:
        scorer, group = cell.get_attribute("data-scorer"), cell.get_attribute("data-group")
        clustered = cell.get_attribute("data-clustered") is not None
        assert cell.text == pct_pm(summary["scorers"][scorer][group], clustered), (scorer, group)
    every = browser.find_elements(By.CSS_SELECTOR, "table.breakdown td[data-scorer='robust']")
    assert [c.text for c in every] == [pct_pm(s) for s in summary["scorers"]["robust"].values()]

    def shown():
        count = browser.find_element(By.ID, "count").text
        cards = browser.find_elements(By.CSS_SELECTOR, "#samples .sample")
        return int(count.split()[0]), cards

    total, cards = shown()
    assert total == 136 and len(cards) == 20  # first page
    assert browser.find_element(By.ID, "page").text == "page 1 of 7"
    browser.find_element(By.ID, "next").click()
    assert browser.find_element(By.ID, "page").text == "page 2 of 7"

    for outcome in ("invalid", "wrong", "correct"):
        Select(browser.find_element(By.ID, "f-outcome")).select_by_value(outcome)
        n, cards = shown()
        assert n == sum(outcome_of(r) == outcome for r in records) > 0
        assert {c.get_attribute("data-outcome") for c in cards} == {outcome}
        assert browser.find_element(By.ID, "page").text.startswith("page 1 of")

    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("")
    Select(browser.find_element(By.ID, "f-dataset")).select_by_value("kather_et_al_2016")
    Select(browser.find_element(By.ID, "f-qtype")).select_by_value("classification")
    n, cards = shown()
    wanted = [r for r in records
              if r["dataset"] == "kather_et_al_2016" and r["question_type"] == "classification"]
    assert n == len(wanted) == len(cards) > 0
    by_id = {r["item_id"]: r for r in wanted}
    for card in cards:
        record = by_id[card.find_element(By.CSS_SELECTOR, ".meta").text.split(" · ")[0]]
        assert card.find_element(By.CSS_SELECTOR, "pre.response").text == record["response"]
        assert card.find_element(By.CSS_SELECTOR, ".extracted").text == (
            record["extracted"] or "none")
        assert record["rule"] in card.text
        assert card.find_element(By.CSS_SELECTOR, "img.thumb").get_attribute(
            "src").startswith("data:image/jpeg;base64,")
    # the prompt is there, exact, behind a click
    card.find_element(By.TAG_NAME, "summary").click()
    prompt = record["prompt"][0]["content"][1]["text"]
    assert card.find_element(By.CSS_SELECTOR, "details pre").text == f"[user]\n<image>\n{prompt}"

    # the filters live in the URL, so a filtered view can be shared
    assert "dataset=kather_et_al_2016" in browser.current_url
    browser.get((run_dir / "report.html").as_uri() + "#outcome=wrong")
    assert shown()[0] == sum(outcome_of(r) == "wrong" for r in records)

    browser.get((run_dir / "report.html").as_uri())
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as img:
        assert img.width >= 1000
    print(f"screenshot: {shot}")


def test_a_sampled_report_shows_whole_images_and_reads_only_their_thumbnails(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    ubench("report", str(copy), "--max-samples", "40")
    page = (copy / "report.html").read_text()
    shown = json.loads(re.search(r'id="samples-data">(.*?)</script>', page).group(1))
    thumbs = json.loads(re.search(r'id="thumbs-data">(.*?)</script>', page).group(1))
    assert len(shown) == 40
    per_image = Counter(r["image_id"] for r in read_jsonl(copy / "samples.jsonl"))
    shown_per_image = Counter(s["image"] for s in shown)
    partial = [i for i, n in shown_per_image.items() if n != per_image[i]]
    assert len(partial) <= 1  # only the image at the cut loses questions
    assert set(thumbs) == set(shown_per_image) and len(thumbs) < len(per_image)
    with Image.open(io.BytesIO(base64.b64decode(next(iter(thumbs.values())).split(",")[1]))) as im:
        assert im.format == "JPEG" and max(im.size) <= 128
