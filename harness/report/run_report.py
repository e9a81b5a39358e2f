"""The run report: one self-contained report.html, plus summary.csv, samples.parquet and PNG plots.

Everything comes from the run folder alone (samples.jsonl, manifest.json, summary.json and the
thumbnails the run made, thumbnails.jsonl): the dataset is never opened, so a run folder copied
elsewhere reports the same. samples.jsonl is streamed twice (harness.report.view), never held whole.
"""
from __future__ import annotations

import base64
import html
import json
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow.parquet as pq

from harness.atomic import replaced_atomically
from harness.config import BROWSER_LIMIT
from harness.report.calibration_report import calibration_html, write_calibration_plots
from harness.report.results import MANIFEST, read_json, read_summary
from harness.report.samples_table import latest_batches, outcome, parquet_schema
from harness.report.schema import (
    SampleRecord,
    Scorers,
    Stat,
    Summary,
)
from harness.report.tables import HEADLINE, fmt, interval, pct
from harness.report.thumbnails import THUMBNAILS, browser_images, image_rank, read_thumbnails
from harness.report.view import RunView, read_view
from harness.score.usage import judge_usage_text, usage_text

if TYPE_CHECKING:
    import pandas as pd

REPORT_HTML = "report.html"
SUMMARY_CSV = "summary.csv"
SAMPLES_PARQUET = "samples.parquet"
PLOTS = "plots"
ASSETS = Path(__file__).parent / "assets"


def write_report(run_dir: Path, *, summary: Summary | None = None,
                 view: RunView | None = None, max_samples: int = BROWSER_LIMIT,
                 with_thumbnails: bool = True) -> Path:
    """Write report.html, summary.csv, samples.parquet and plots/*.png into `run_dir`.

    `with_thumbnails=False` leaves the image thumbnails out of report.html (a smaller page).
    """
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).exists() else None
    summary = summary if summary is not None else read_summary(run_dir)
    view = view if view is not None else read_view(run_dir)

    shown_ids = {r.item_id for r in browser_subset(view.records, max_samples)}
    summary_frame(summary).to_csv(run_dir / SUMMARY_CSV, index=False)
    shown = write_samples_parquet(view, run_dir / SAMPLES_PARQUET, keep=shown_ids)
    plots, plot_note = write_plots(summary, view.records, run_dir / PLOTS)
    thumbs, thumb_note = _thumbnails(run_dir, {s["image"] for s in shown}) \
        if with_thumbnails else ({}, "left out (--no-thumbnails)")
    parts = [
        _header(manifest, summary),
        _results_sections(summary),
        calibration_html(summary, table),
        _plots_section(plots, plot_note),
        _browser_section(len(view.records), shown, thumbs, thumb_note),
        _section("Manifest", f"<pre>{html.escape(json.dumps(manifest, indent=2))}</pre>"
                 if manifest else "<p>No manifest.json in this run folder.</p>"),
    ]
    path = run_dir / REPORT_HTML
    write_page(path, _title(manifest), parts,
               script=(ASSETS / "browser.js").read_text(encoding="utf-8"))
    return path


def _thumbnails(run_dir: Path, image_ids: set[str]) -> tuple[dict[str, str], str | None]:
    """The shown images' thumbnails the run made; a note on those it did not."""
    if not (run_dir / THUMBNAILS).exists():
        return {}, f"this run folder has no {THUMBNAILS} (made during a run since v0.5)"
    thumbs = read_thumbnails(run_dir, image_ids)
    missing = len(image_ids) - len(thumbs)
    return thumbs, (f"{missing} of {len(image_ids)} images have none (unreadable images, or "
                    "more samples shown than the run made thumbnails for)" if missing else None)


# ---------------------------------------------------------------------------------------------
# Tables for pandas users


def summary_frame(summary: Summary) -> pd.DataFrame:
    """One row per (evaluation, scorer, group): accuracy, both CIs and chance."""
    import pandas as pd  # here: its import is a third of a second a run need not wait for

    rows = []
    parts = [("standard", summary["scorers"])]
    if "circular" in summary:
        parts.append(("circular", summary["circular"]["scorers"]))
    for evaluation, scorers in parts:
        for scorer, groups in scorers.items():
            for group, stat in groups.items():
                rows.append({"evaluation": evaluation, "scorer": scorer, "group": group, **stat})
    return pd.DataFrame(rows)


def write_samples_parquet(view: RunView, path: Path, keep: set[str]) -> list[dict[str, Any]]:
    """Stream every latest record into samples.parquet, a batch at a time (from the run's spool
    where it made one); returns the browser's samples of the records whose item id is in `keep`,
    in item-id order."""
    kept: list[dict[str, Any]] = []

    def seen(record: SampleRecord) -> None:
        if record.item_id in keep:
            kept.append(browser_sample(record))

    wanted = {view.latest[i][0] for i in keep if i in view.latest}
    with replaced_atomically(path) as tmp, \
            pq.ParquetWriter(tmp, parquet_schema(view.keys)) as writer:
        for batch in latest_batches(view.path, view.keys, view.lines, wanted, seen, view.spool,
                                    view.spooled_after):
            writer.write_batch(batch)
    return sorted(kept, key=lambda s: s["id"])


# ---------------------------------------------------------------------------------------------
# Plots


def import_plotting_soon(delay_s: float = 2.0) -> None:
    """Import pandas (summary.csv) and matplotlib in a background thread once the run is under
    way: over a second of CPU that the request phase has to spare and its start and end do not."""
    def load() -> None:
        import pandas  # noqa: F401
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except ImportError:
            pass
    timer = threading.Timer(delay_s, load)
    timer.daemon = True
    timer.start()


def write_plots(summary: Summary, records: list[SampleRecord],
                folder: Path) -> tuple[dict[str, Path], str | None]:
    """plots/accuracy_by_dataset.png and plots/letter_confusion.png (matplotlib, no display)."""
    try:
        from matplotlib.figure import Figure  # the object API: Agg, no global pyplot state
    except ImportError:
        return {}, "Plots need matplotlib: pip install 'ubench-harness[report]'."
    folder.mkdir(parents=True, exist_ok=True)
    plots = {"Accuracy by dataset": folder / "accuracy_by_dataset.png",
             "Letter bias: gold vs predicted letter": folder / "letter_confusion.png"}
    paths = iter(plots.values())
    _plot_accuracy(Figure, summary, next(paths))
    _plot_confusion(Figure, records, next(paths))
    plots.update(write_calibration_plots(Figure, summary, records, folder))
    return plots, None


def _plot_accuracy(Figure, summary: Summary, path: Path) -> None:
    robust = summary["scorers"]["robust"]
    names: list[str] = [n for n in ("coarse", "fine") if n in robust]
    names += [n for n in robust if n.startswith("dataset/")]
    fig = Figure(figsize=(8, 0.32 * len(names) + 1.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(names)))[::-1]
    stats = [robust[n] for n in names]
    acc = [100 * (s["accuracy"] or 0.0) for s in stats]
    err = [[max(0.0, 100 * ((s["accuracy"] or 0.0) - (s["cluster_ci_low"] or 0.0)))
            for s in stats],
           [max(0.0, 100 * ((s["cluster_ci_high"] or 0.0) - (s["accuracy"] or 0.0)))
            for s in stats]]
    colors = ["#3b6ea5" if n.endswith("fine") else "#7fa7d0" for n in names]
    ax.barh(y, acc, xerr=err, color=colors, capsize=2, error_kw={"elinewidth": 0.8})
    ax.scatter([100 * (s["chance"] or 0.0) for s in stats], y, marker="|", s=160, color="#c0392b",
               zorder=3, label="chance for these items")
    ax.set_yticks(y, [group_label(n) for n in names], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy % (robust scorer), 95% CI clustered by image")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)


def _plot_confusion(Figure, records: list[SampleRecord], path: Path) -> None:
    scored = [r for r in records if r.error is None and r.gold]
    gold = sorted({str(r.gold) for r in scored})
    predicted = sorted({r.extracted for r in scored if r.extracted} | set(gold))
    columns = predicted + ["invalid"]
    counts = [[0] * len(columns) for _ in gold]
    for r in scored:
        counts[gold.index(str(r.gold))][columns.index(r.extracted or "invalid")] += 1
    fig = Figure(figsize=(1.0 + 0.55 * len(columns), 1.0 + 0.5 * max(1, len(gold))), dpi=100,
                 layout="constrained")
    ax = fig.add_subplot()
    shares = [[c / max(1, sum(row)) for c in row] for row in counts]
    ax.imshow(shares or [[0]], cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                    color="white" if shares[i][j] > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(gold)), gold)
    ax.set_xlabel("predicted letter (robust parser)")
    ax.set_ylabel("gold letter")
    fig.savefig(path)


# ---------------------------------------------------------------------------------------------
# HTML


def html_page(title: str, body: str, script: str = "") -> str:
    """A complete HTML page with the shared stylesheet inlined (no network needed to open it)."""
    return _page_head(title) + body + _page_tail(script)


def write_page(path: Path, title: str, parts: list[str], script: str = "") -> None:
    """`html_page` written part by part (atomically): a large page is never copied whole."""
    with replaced_atomically(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for part in [_page_head(title), *parts, _page_tail(script)]:
            f.write(part)


def _page_head(title: str) -> str:
    css = (ASSETS / "style.css").read_text(encoding="utf-8")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{css}</style></head>\n<body><main>"
            f"<h1>{html.escape(title)}</h1>\n")


def _page_tail(script: str) -> str:
    return "</main>" + (f"<script>{script}</script>" if script else "") + "</body></html>\n"


def group_label(name: str) -> str:
    """`dataset/kather_et_al_2016/fine` → `kather_et_al_2016 · fine`; `question_type/stain` →
    `stain`."""
    head, _, rest = name.partition("/")
    if head == "question_type":
        return rest
    if head == "dataset":  # the dataset's name may itself hold a "/"
        return " · ".join(rest.rsplit("/", 1))
    return " ".join(name.split("/"))


def table(head: list[str], rows: list[list[str]], cls: str = "",
          row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are already-escaped HTML (a cell may carry `<td ...>` itself)."""
    def cell(c: str) -> str:
        return c if c.startswith("<td") else f"<td>{c}</td>"
    classes = row_classes or [""] * len(rows)
    return (f"<table class=\"{cls}\"><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(f"<tr class=\"{c}\">" + "".join(cell(x) for x in row) + "</tr>"
                      for row, c in zip(rows, classes))
            + "</tbody></table>\n")


def _section(title: str, body: str, anchor: str = "") -> str:
    ident = f" id=\"{anchor}\"" if anchor else ""
    return f"<section{ident}><h2>{html.escape(title)}</h2>\n{body}</section>\n"


def _title(manifest: dict[str, Any] | None) -> str:
    if not manifest:
        return "uBench results"
    return f"uBench results: {manifest['model']['spec']} · prompt {manifest['template']['name']}"


def _header(manifest: dict[str, Any] | None, summary: Summary) -> str:
    facts = []
    if manifest:
        ds = manifest["dataset"]
        facts += [("dataset", f"{ds['kind']} @ {ds['revision']}"),
                  ("template", f"{manifest['template']['name']} "
                               f"({manifest['template']['sha256'][:12]})"),
                  ("generation", json.dumps(manifest["generation"])),
                  ("option order", order_text(manifest.get("options_order") or {})),
                  ("harness", f"{manifest['harness_version']} · created {manifest['created']}")]
    n_records = summary["n_records"]
    facts += [("items", f"{summary['n_scored']} scored, {summary['n_errors']} errors "
                        f"({pct(summary['n_errors'] / n_records if n_records else None)}%, "
                        "not scored)"),
              ("invalid rate", f"{pct(summary['invalid_rate'])}% (robust parser found no answer; "
                               "counted wrong)"),
              ("data warnings", str(summary["n_data_warnings"]))]
    if text := usage_text(summary):
        facts.append(("usage and cost", text))
    if text := judge_usage_text(summary.get("judge_usage")):
        facts.append(("LLM judge usage and cost", text))
    return "<dl class=\"facts\">" + "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts) + "</dl>\n"


def order_text(order: dict[str, Any] | None) -> str:
    """How the options were ordered, from the manifest's `options_order`."""
    order = order or {}
    steps = []
    if order.get("shuffle_seed") is not None:
        steps.append(f"shuffled per item (seed {order['shuffle_seed']})")
    if order.get("circular"):
        steps.append("every rotation asked (circular)")
    return ", then ".join(steps) or "as stored"


def _stat_cell(stat: Stat | None, scorer: str, group: str,
               clustered: bool = False) -> str:
    return (f"<td data-scorer=\"{scorer}\" data-group=\"{html.escape(group)}\""
            f"{' data-clustered' if clustered else ''}>{fmt(stat, clustered)}</td>")


def _headline(scorers: Scorers, prefix: str = "") -> str:
    head = ["", *(group_label(g) for g in HEADLINE)]
    rows = [[scorer, *(_stat_cell(groups.get(g), prefix + scorer, g) for g in HEADLINE)]
            for scorer, groups in scorers.items()]
    robust = scorers["robust"]
    rows.append(["robust, CI clustered by image",
                 *(_stat_cell(robust.get(g), prefix + "robust", g, True) for g in HEADLINE)])
    rows.append(["chance", *(pct(stat["chance"]) if (stat := robust.get(g)) else pct(None)
                             for g in HEADLINE)])
    return table(head, rows, "headline")


def _breakdown(scorers: Scorers) -> str:
    robust, official = scorers["robust"], scorers["official"]
    rows = []
    for g, stat in robust.items():
        rows.append([html.escape(group_label(g)), str(stat["n"]),
                     _stat_cell(official.get(g), "official", g), _stat_cell(stat, "robust", g),
                     interval(stat),
                     pct(stat["chance"])])
    return table(["group", "n", "official", "robust", "robust 95% CI by image", "chance"], rows,
                 "breakdown")


def _results_sections(summary: Summary) -> str:
    out = _section("Accuracy (paper layout)", (
        "<p>Accuracy % ± 95% bootstrap CI: the paper's basic interval over questions (as the "
        "paper computes it; on small groups it can leave [0, 100]), and [low, high] from "
        "resampling whole images (percentile bootstrap, Wilson's interval below 20 images; "
        "several questions share a micrograph, so it is the honest one, and it stays inside "
        "[0, 100]). Chance is the mean of 1/number of options over the same items.</p>"
        + _headline(summary["scorers"])), "accuracy")
    out += _section("Every group", _breakdown(summary["scorers"]), "groups")
    if circ := summary.get("circular"):
        per_rot = table(["rotation", "n", "accuracy (robust)"],
                        [[k, str(v["n"]), pct(v["accuracy"])]
                         for k, v in circ["per_rotation"].items()])
        out += _section("Circular evaluation", (
            f"<p>{circ['n_items']} items; an item counts as correct only if every rotation of its "
            f"options is answered correctly ({circ['n_incomplete']} items with a failed rotation "
            "left out). Chance is (1/n)<sup>n</sup> for n options.</p>"
            + _headline(circ["scorers"], "circular-") + per_rot), "circular")
    bias = summary.get("letter_bias") or {"letters": {}, "invalid": 0}
    n = sum(v["gold"] for v in bias["letters"].values()) or 1
    out += _section("Letter bias", (
        "<p>How often each letter is the right answer and how often the model picks it; a model "
        "with a position bias picks some letter far more often than it is gold.</p>"
        + table(["letter", "gold %", "predicted %", "accuracy when predicted %"],
                [[k, pct(v["gold"] / n), pct(v["predicted"] / n),
                  pct(v["correct"] / v["predicted"] if v["predicted"] else None)]
                 for k, v in bias["letters"].items()]
                + [["invalid", "", pct(bias["invalid"] / n), ""]])), "letters")
    rules = table(["rule", "n", "accuracy %"],
                  [[html.escape(r), str(v["n"]), pct(v["accuracy"])]
                   for r, v in summary["rules"].items()])
    errors = table(["error type", "n"], [[html.escape(t), str(c)] for t, c in
                                         summary["errors_by_type"].items()]) \
        if summary["errors_by_type"] else "<p>No failed requests.</p>"
    return out + _section("Parser rules and errors", rules + errors, "rules")


def _plots_section(plots: dict[str, Path], note: str | None) -> str:
    if note:
        return _section("Plots", f"<p class=\"note\">{html.escape(note)}</p>")
    figures = "".join(
        f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode('ascii')}\">"
        f"<figcaption>{html.escape(title)} ({PLOTS}/{path.name})</figcaption></figure>"
        for title, path in plots.items())
    return _section("Plots", f"<div class=\"plots\">{figures}</div>", "plots")


def browser_subset(records: list[SampleRecord], limit: int) -> list[SampleRecord]:
    """All records, or a fixed `limit` of them: every question of the images `browser_images`
    draws (by hash of the image id; the last one's first questions by id where the limit cuts
    it), so the report shows (and reads back) as few images as it can, and exactly the images
    whose thumbnails the run recorded."""
    if limit <= 0 or len(records) <= limit:
        return records
    chosen = browser_images(Counter(r.image_id for r in records), limit)
    key = lambda r: (image_rank(r.image_id), r.item_id)  # noqa: E731
    shown = sorted((r for r in records if r.image_id in chosen), key=key)[:limit]
    return sorted(shown, key=lambda r: r.item_id)


def prompt_text(messages: list[dict[str, Any]] | None) -> str:
    """The exact prompt as text: each message's role, its text parts, and where the image goes."""
    lines = []
    for msg in messages or []:
        lines.append(f"[{msg['role']}]")
        content = msg["content"]
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part["type"] != "image":
                lines.append(part.get("text", ""))
            else:  # a few-shot example's image is named; the evaluated one is just <image>
                lines.append(f"<image {part['image_id']}>" if "image_id" in part else "<image>")
    return "\n".join(lines)


def browser_sample(r: SampleRecord) -> dict[str, Any]:
    """What the sample browser shows of a record."""
    return {
        "id": r.item_id, "image": r.image_id, "dataset": r.dataset,
        "qtype": r.question_type, "gold": r.gold, "extracted": r.extracted,
        "rule": r.rule, "outcome": outcome(r), "official": r.correct_official,
        "options": r.options, "order": r.option_order,
        "prompt": prompt_text(r.prompt), "response": r.response,
        "error": r.error.message if r.error is not None else None,
    }


def _browser_section(n_records: int, samples: list[dict[str, Any]],
                     thumbs: dict[str, str], thumb_note: str | None) -> str:
    shown = samples
    notes = []
    if len(shown) < n_records:
        notes.append(f"Showing a fixed sample of {len(shown):,} of {n_records:,} records "
                     f"(every record is in {SAMPLES_PARQUET}; `ubench report --max-samples 0` "
                     "embeds all).")
    if thumb_note:
        notes.append(f"Thumbnails unavailable: {thumb_note}.")
    body = "".join(f"<p class=\"note\">{html.escape(n)}</p>" for n in notes) + (
        "<div class=\"filters\">"
        "<label>dataset <select id=\"f-dataset\"><option value=\"\">all</option></select></label>"
        "<label>question type <select id=\"f-qtype\"><option value=\"\">all</option></select>"
        "</label><label>outcome <select id=\"f-outcome\"><option value=\"\">all</option>"
        + "".join(f"<option value=\"{o}\">{o}</option>"
                  for o in ("correct", "wrong", "invalid", "error"))
        + "</select></label><span id=\"count\"></span>"
        "<button id=\"prev\">◀</button><span id=\"page\"></span><button id=\"next\">▶</button>"
        "</div><div id=\"samples\"></div>"
        + _json_script("samples-data", samples) + _json_script("thumbs-data", thumbs))
    return _section("Samples", body, "browser")


def _json_script(ident: str, data: Any) -> str:
    """JSON inside a <script> tag; '<' is escaped so no response text can close the tag."""
    text = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode().replace("<", "\\u003c")
    return f"<script type=\"application/json\" id=\"{ident}\">{text}</script>"
