"""Summary tables in the paper's layout, as Markdown (summary.md and the terminal)."""
from __future__ import annotations

from typing import Any

from harness.data.items import COARSE_TYPES, FINE_TOTAL_EXCLUDED
from harness.report.calibration_report import calibration_markdown
from harness.report.markdown import md_cell, md_table
from harness.report.schema import Stat, Summary
from harness.score.usage import judge_usage_text, usage_text

# The paper's headline groups, in Table 1's order.
HEADLINE = ["coarse", "fine", *(f"question_type/{qt}" for qt in COARSE_TYPES),
            "pathology/coarse", "pathology/fine"]


def fmt(stat: Stat | None, clustered: bool = False) -> str:
    """`62.68 ± 0.35` in percent, as Table 1 prints it (the paper's interval); clustered:
    `62.68 [61.90, 63.41]`, the interval by image, which is not symmetric."""
    if not stat or stat["accuracy"] is None:
        return "–"
    if clustered:
        return f"{100 * stat['accuracy']:.2f} {interval(stat)}"
    return f"{100 * stat['accuracy']:.2f} ± {100 * (stat['pm'] or 0.0):.2f}"


def interval(stat: Stat) -> str:
    """`[61.90, 63.41]`: the clustered CI of a group's accuracy, in percent."""
    return f"[{pct(stat['cluster_ci_low'])}, {pct(stat['cluster_ci_high'])}]"


def _chance(stat: Stat | None) -> str:
    return pct(stat["chance"] if stat else None)


def _n(stat: Stat | None) -> int:
    return stat["n"] if stat else 0


def summary_markdown(summary: Summary, manifest: dict[str, Any] | None = None) -> str:
    """summary.md and the CLI's closing table: accuracy by group with intervals, usage and cost."""
    lines: list[str] = []
    if manifest:
        lines += [
            f"# uBench results: {manifest['model']['spec']} · prompt `{manifest['template']['name']}`",
            "",
            f"Dataset {manifest['dataset']['kind']} @ `{manifest['dataset']['revision']}` · "
            f"harness {manifest['harness_version']} · seed {manifest['seed']}",
            "",
        ]
    lines += [
        f"{summary['n_scored']} items scored, {summary['n_errors']} errors (not scored), "
        f"invalid rate {pct(summary['invalid_rate'])}, {summary['n_data_warnings']} data warnings.",
        "",
        *([f"Usage: {text}", ""] if (text := usage_text(summary)) else []),
        *([f"Judge usage: {text}", ""] if (text := judge_usage_text(summary.get("judge_usage"))) else []),
        "Accuracy % ± 95% bootstrap CI (basic, over items, as in the paper; on small groups it can "
        "leave [0, 1]); the clustered CI below is [low, high] from a percentile bootstrap over "
        "images (Wilson below 20 images), always inside [0, 1]; "
        f"fine excludes {', '.join(FINE_TOTAL_EXCLUDED)}.",
        "",
    ]
    if judge := summary.get("judge"):
        lines += [f"LLM judge {judge['model']}: asked about {judge['n_asked']} invalid responses, "
                  f"decided {judge['n_decided']}; robust accuracy {pct(judge['without']['accuracy'])}"
                  f" without it, {pct(judge['with']['accuracy'])} with it (invalid rate "
                  f"{pct(judge['without']['invalid_rate'])} → {pct(judge['with']['invalid_rate'])}).",
                  ""]
    chance = summary["scorers"]["robust"]
    lines += md_table(
        ["scorer", "coarse", "fine", *COARSE_TYPES, "pathology coarse", "pathology fine"],
        [*([scorer, *(fmt(groups.get(g)) for g in HEADLINE)]
           for scorer, groups in summary["scorers"].items()),
         ["chance", *(_chance(chance.get(k)) for k in HEADLINE)]])
    lines += ["", "Clustered by image (robust scorer): coarse "
              f"{fmt(chance.get('coarse'), True)}, fine {fmt(chance.get('fine'), True)}.", ""]

    datasets = sorted({dataset_of(name) for name in chance if name.startswith("dataset/")})
    off = summary["scorers"]["official"]
    lines += ["## Per dataset", "", *md_table(
        ["dataset", "fine n", "fine official", "fine robust", "coarse n", "coarse official",
         "coarse robust"],
        ([ds, _n(chance.get(f)), fmt(off.get(f)), fmt(chance.get(f)), _n(chance.get(c)),
          fmt(off.get(c)), fmt(chance.get(c))]
         for ds in datasets for f, c in [(f"dataset/{ds}/fine", f"dataset/{ds}/coarse")]))]
    if circ := summary.get("circular"):
        robust = circ["scorers"]["robust"]
        rotations = ", ".join(f"r{k} {pct(v['accuracy'])}" for k, v in
                              circ["per_rotation"].items())
        lines += ["", "## Circular evaluation (right only if every rotation is right)", "",
                  f"{circ['n_items']} items ({circ['n_incomplete']} with a failed rotation left "
                  f"out), robust scorer: coarse {fmt(robust.get('coarse'))} (chance "
                  f"{_chance(robust.get('coarse'))}), fine "
                  f"{fmt(robust.get('fine'))}. Accuracy per rotation: {rotations}."]
    if calibration := calibration_markdown(summary):
        lines += ["", *calibration]
    lines += ["", "## Parser rules (robust scorer)", "", *md_table(
        ["rule", "n", "accuracy"],
        ([rule, info["n"], pct(info["accuracy"])] for rule, info in summary["rules"].items()))]
    if summary["errors_by_type"]:
        lines += ["", "## Errors (not scored)", "",
                  *md_table(["type", "n"], summary["errors_by_type"].items())]
    if cut := summary.get("finish_reasons"):
        lines += ["", "Answers that did not end normally (scored as they are): " + ", ".join(
            f"{md_cell(k)}: {n}" for k, n in cut.items()) + "."]
    if summary.get("bad_input_by_field"):
        lines += ["", "Skipped for bad input, by field: " + ", ".join(
            f"{f}: {n}" for f, n in summary["bad_input_by_field"].items()) + "."]
    return "\n".join(lines) + "\n"


def dataset_of(group: str) -> str:
    """`dataset/<name>/fine` → `<name>`, whatever the name holds (a `/` included)."""
    return group.split("/", 1)[1].rsplit("/", 1)[0]


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; a dash where there is no value."""
    return "–" if value is None else f"{100 * value:.2f}"
