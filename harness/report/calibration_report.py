"""The answer mode and calibration parts of summary.md and the report: tables, the reliability
diagram and the risk–coverage plot (`harness.score.calibration` computes the numbers)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from harness.report.markdown import md_table
from harness.report.schema import SampleRecord, Summary
from harness.score.calibration import COVERAGES, ItemArrays, has_letter_probs, risk_coverage

# (key in a calibration group, label, format): percentages for probabilities and accuracies.
METRICS = [("accuracy", "accuracy", "pct"), ("mean_gold_prob", "gold prob", "pct"),
           ("brier", "Brier", "num"), ("nll", "NLL", "num"), ("ece", "ECE", "pct"),
           ("letter_mass", "letter mass", "pct"),
           *((f"selective_accuracy_{round(100 * c)}", f"acc@{round(100 * c)}%", "pct")
             for c in COVERAGES if c < 1),
           ("aurc", "AURC", "num")]


def _value(stat: dict[str, Any] | None, kind: str, ci: bool = True) -> str:
    if not stat or stat.get("value") is None:
        return "–"
    scale, digits = (100, 2) if kind == "pct" else (1, 4)
    text = f"{scale * stat['value']:.{digits}f}"
    if ci:
        text += f" [{scale * stat['ci_low']:.{digits}f}, {scale * stat['ci_high']:.{digits}f}]"
    return text


def answer_mode_text(summary: Summary) -> list[str]:
    """Sentences on how the answer mode held up (constraint violations, missing probabilities)."""
    modes = summary.get("answer_mode")
    if not modes:
        return []
    out = [f"Answer mode `{modes['mode']}`."]
    if "n_constraint_violations" in modes:
        n = modes["n_constraint_violations"]
        out.append(f"{n} responses ({100 * modes['constraint_violation_rate']:.2f}%) ignored the "
                   "constraint (answered outside the option letters)." if n else
                   "Every response was one of the option letters.")
    if "n_with_letter_probs" in modes:
        missing = ", ".join(f"{k}: {v}" for k, v in modes["without_letter_probs"].items())
        agree = modes["argmax_agrees_with_text"]
        out.append(f"{modes['n_with_letter_probs']} items with letter probabilities, "
                   f"{modes['n_without_letter_probs']} without" + (f" ({missing})" if missing
                                                                    else "")
                   + (f"; the argmax agrees with the letter read from the text on "
                      f"{100 * agree:.2f}%." if agree is not None else "."))
    return out


def calibration_markdown(summary: Summary) -> list[str]:
    """summary.md lines: the answer mode, and the calibration table when there is one."""
    lines = [" ".join(answer_mode_text(summary)), ""] if summary.get("answer_mode") else []
    calibration = summary.get("calibration")
    if not calibration:
        return lines
    head = ["group", "n", *(label for _, label, _ in METRICS)]
    lines += ["## Calibration (letter probabilities)", "",
              f"Prediction = argmax of the letter probabilities; {calibration['n_bins']} ECE "
              "bins; accuracy, gold prob, ECE, letter mass and acc@x% (accuracy on the x% most "
              "confident items) in %; 95% CIs resample images.", "",
              *md_table(head, ([name, group["n"], *(_value(group.get(k), kind)
                                                    for k, _, kind in METRICS)]
                               for name, group in calibration["groups"].items()))]
    return lines + [""]


def calibration_html(summary: Summary, table) -> str:
    """The report's section (empty without an answer mode); `table` is the report's helper."""
    if not summary.get("answer_mode"):
        return ""
    body = f"<p>{html.escape(' '.join(answer_mode_text(summary)))}</p>"
    calibration = summary.get("calibration")
    if calibration:
        rows = [[html.escape(name), str(g["n"]),
                 *(_value(g.get(k), kind) for k, _, kind in METRICS)]
                for name, g in calibration["groups"].items()]
        body += ("<p>Calibration of the letter probabilities (prediction = argmax): "
                 f"{calibration['n_bins']} equal-width confidence bins for ECE; acc@x% is the "
                 "accuracy on the x% most confident items; accuracy, gold prob, ECE, letter mass "
                 "and acc@x% in %; 95% CIs resample whole images.</p>"
                 + table(["group", "n", *(label for _, label, _ in METRICS)], rows))
    return f"<section id=\"calibration\"><h2>Answer mode and calibration</h2>{body}</section>"


def write_calibration_plots(Figure, summary: Summary, records: list[SampleRecord],
                            folder: Path) -> dict[str, Path]:
    """plots/reliability.png and plots/risk_coverage.png, when the run has letter probabilities."""
    calibration = summary.get("calibration")
    items = sorted((r for r in records if has_letter_probs(r)), key=lambda r: r.item_id)
    if not calibration or not items:
        return {}
    plots = {"Reliability diagram": folder / "reliability.png",
             "Risk–coverage curve": folder / "risk_coverage.png"}
    _plot_reliability(Figure, calibration, plots["Reliability diagram"])
    _plot_risk_coverage(Figure, calibration, ItemArrays(items), plots["Risk–coverage curve"])
    return plots


def _plot_reliability(Figure, calibration: dict[str, Any], path: Path) -> None:
    bins = calibration["reliability"]
    pooled = calibration["groups"]["all"]
    fig = Figure(figsize=(5.2, 5.0), dpi=100)
    ax = fig.add_subplot()
    width = bins[0]["high"] - bins[0]["low"]
    full = [b for b in bins if b["n"]]
    ax.bar([b["low"] for b in full], [b["accuracy"] for b in full], width=width, align="edge",
           color="#7fa7d0", edgecolor="#3b6ea5", label="accuracy in bin")
    ax.scatter([b["confidence"] for b in full], [b["accuracy"] for b in full], s=12,
               color="#1f3b5c", zorder=3, label="(mean confidence, accuracy)")
    for b in full:
        top = b["accuracy"] > 0.92  # no room above: write the count inside the bar
        ax.text(b["low"] + width / 2, b["accuracy"] + (-0.05 if top else 0.02), str(b["n"]),
                ha="center", fontsize=7, color="white" if top else "#333")
    ax.plot([0, 1], [0, 1], "--", color="#c0392b", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (probability of the predicted letter)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"n = {pooled['n']}, ECE {100 * pooled['ece']['value']:.1f}%, "
                 f"Brier {pooled['brier']['value']:.3f} (numbers: items per bin)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _plot_risk_coverage(Figure, calibration: dict[str, Any], arrays: ItemArrays,
                        path: Path) -> None:
    curve = risk_coverage(arrays)
    pooled = calibration["groups"]["all"]
    fig = Figure(figsize=(5.2, 4.0), dpi=100)
    ax = fig.add_subplot()
    ax.plot(curve["coverage"], curve["risk"], color="#3b6ea5", lw=1.5)
    ax.axhline(curve["risk"][-1], ls="--", color="#c0392b", lw=1, label="risk at full coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("coverage (share of items answered, most confident first)")
    ax.set_ylabel("risk (error rate of the answered items)")
    ax.set_title(f"AURC {pooled['aurc']['value']:.3f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
