"""A study's outputs: study.json, study.md, study.html and a heatmap per condition.

Everything is computed from the cells' run folders (their summary.json and samples.jsonl), so
`ubench study` can rewrite them at any time. Per condition (answer mode, option order, seed):

- the leaderboard, model × template, read from each cell's summary.json (official and robust
  scorer, coarse and fine, with the CI clustered by image);
- per model, the prompt sensitivity: the spread (max − min) of its accuracy across templates, on
  the items every template answered, with a percentile CI that resamples images jointly;
- the rank stability of the models across templates: Kendall's τ-b between the rankings of every
  pair of templates, and in how many templates the top model differs from the reference's;
- the paired comparisons `ubench compare` makes (every template against the first, per model; every
  model against the first, per template), on the coarse and fine groups, Holm-adjusted across
  every test of the study.
"""
from __future__ import annotations

import base64
import html
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from harness.report.compare import Run, comparable, load_run, outcome_matrix
from harness.report.markdown import md_table
from harness.report.paired import differences, holm_adjust, shared_items
from harness.report.results import read_summary, write_json, write_text
from harness.report.run_report import html_page, table
from harness.report.schema import Summary
from harness.report.tables import pct
from harness.score.scoring import CLUSTER_CI_METHOD, SCORERS, group_order, paper_groups
from harness.score.stats import ALPHA, cluster_codes, kendall_tau, paired_test, spread_bootstrap

STUDY_JSON, STUDY_MD, STUDY_HTML = "study.json", "study.md", "study.html"
HEATMAP = "heatmap.png"
COMPARED_GROUPS = ("coarse", "fine")
COMPARED_SCORER = "robust"


def _condition(cell: dict[str, Any]) -> str:
    return f"{cell['answer_mode']} · {cell['option_order']} · seed {cell['seed']}"


def study_result(cells: list[dict[str, Any]], metric: dict[str, str], *,
                 seed: int = 0) -> dict[str, Any]:
    """Every number of the study's outputs, as plain data. Each cell's samples are read once;
    `done` (its answered items) is filled in from that read."""
    models = list(dict.fromkeys(c["model"] for c in cells))
    templates = list(dict.fromkeys(c["template"] for c in cells))
    conditions: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for c in cells:
        conditions.setdefault(_condition(c), {})[(c["model"], c["template"])] = c
    leaderboard, sensitivity, stability, tests = [], [], [], []
    for condition, grid in conditions.items():
        runs: dict[tuple[str, str], Run] = {}
        for (model, template), cell in grid.items():
            summary = read_summary(Path(cell["folder"]))
            cell["summary"] = summary
            folder = Path(cell["folder"])
            runs[(model, template)] = load_run(folder, f"{folder.parts[-3]}/{folder.name}")
            cell["done"] = len(runs[(model, template)].scored)
            leaderboard.append({"condition": condition, "model": model, "template": template,
                                "folder": cell["folder"], "n_scored": summary["n_scored"],
                                "n_errors": summary["n_errors"],
                                "invalid_rate": summary["invalid_rate"],
                                "metric": _metric(summary, metric),
                                **{f"{scorer}/{group}": _stat(summary, scorer, group)
                                   for scorer in SCORERS for group in COMPARED_GROUPS}})
        for model in models:
            family = [runs[(model, t)] for t in templates if (model, t) in runs]
            sensitivity.append({"condition": condition, "model": model,
                                **_sensitivity(family, templates, metric, seed)})
        scores = {t: [_metric(grid[(m, t)]["summary"], metric) for m in models]
                  for t in templates}
        stability.append({"condition": condition, **_stability(models, templates, scores)})
        families = [("templates of " + m, [runs[(m, t)] for t in templates if (m, t) in runs])
                    for m in models]
        families += [("models on " + t, [runs[(m, t)] for m in models if (m, t) in runs])
                     for t in templates]
        tests += _comparisons(condition, families, seed)
    holm_adjust(tests, "p_holm_study")
    return {"metric": metric, "models": models, "templates": templates,
            "conditions": list(conditions), "intervals": {
                "leaderboard": CLUSTER_CI_METHOD,
                "spread": "percentile bootstrap over images, all templates resampled together",
                "differences": "percentile bootstrap over images (paired)"},
            "leaderboard": leaderboard, "sensitivity": sensitivity, "rank_stability": stability,
            "comparisons": {"groups": list(COMPARED_GROUPS), "n_tests": len(tests),
                            "alpha": ALPHA, "tests": tests}}


def _stat(summary: Summary, scorer: str, group: str) -> dict[str, Any] | None:
    stat = summary["scorers"][scorer].get(group)
    if not stat:
        return None
    return {"n": stat["n"], "accuracy": stat["accuracy"], "cluster_ci_low": stat["cluster_ci_low"],
            "cluster_ci_high": stat["cluster_ci_high"],
            "cluster_ci_method": stat["cluster_ci_method"]}


def _metric(summary: Summary, metric: dict[str, str]) -> float | None:
    stat = summary["scorers"][metric["scorer"]].get(metric["group"])
    return stat["accuracy"] if stat else None


def _sensitivity(runs: list[Run], templates: list[str], metric: dict[str, str],
                 seed: int) -> dict[str, Any]:
    """Spread across templates on the items all of them scored in the metric's group."""
    shared = shared_items(run.scored for run in runs) if runs else []
    reference = [runs[0].scored[i] for i in shared] if runs else []
    index = paper_groups(reference).get(metric["group"], [])
    ids = [shared[i] for i in index]
    outcomes = outcome_matrix(runs, ids, metric["scorer"]).astype(float)
    images = np.array([runs[0].scored[i].image_id for i in ids]) if ids else np.array([])
    result: dict[str, Any] = spread_bootstrap(outcomes, images, seed=seed) if ids else {
        "spread": None, "ci_low": None, "ci_high": None, "p_no_template_effect": None, "n": 0}
    if ids:
        accuracy = outcomes.mean(axis=1)
        result["best_template"] = templates[int(accuracy.argmax())]
        result["worst_template"] = templates[int(accuracy.argmin())]
    return result


def _top(models: list[str], values: list[float | None]) -> list[str]:
    known = [v for v in values if v is not None]
    return [m for m, v in zip(models, values) if known and v == max(known)]


def _template_tau(x: list[float | None], y: list[float | None]) -> float | None:
    """Kendall's τ of two templates' scores; None when a model lacks a score under either."""
    xs, ys = [v for v in x if v is not None], [v for v in y if v is not None]
    return kendall_tau(xs, ys) if len(xs) == len(x) and len(ys) == len(y) else None


def _stability(models: list[str], templates: list[str],
               scores: dict[str, list[float | None]]) -> dict[str, Any]:
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(templates, 2):
        pairs.append({"templates": [a, b], "tau": _template_tau(scores[a], scores[b])})
    taus = [p["tau"] for p in pairs if p["tau"] is not None]
    tops = {t: _top(models, scores[t]) for t in templates}
    reference = tops[templates[0]]
    changes = [t for t in templates[1:] if tops[t] != reference]
    return {"ranking": {t: [m for _, m in sorted(zip(scores[t], models),
                                                 key=lambda p: -(p[0] or 0))]
                        for t in templates},
            "pairs": pairs, "mean_tau": float(np.mean(taus)) if taus else None,
            "top_model": tops, "reference_template": templates[0],
            "top_changes": len(changes), "templates_compared": len(templates) - 1,
            "templates_where_top_changes": changes}


def _comparisons(condition: str, families: list[tuple[str, list[Run]]],
                 seed: int) -> list[dict[str, Any]]:
    """`compare`'s paired tests (robust scorer) on the coarse and fine groups, for each model
    across templates and each template across models (the first run of a family is the
    reference)."""
    tests = []
    for family, runs in families:
        if len(runs) < 2:
            continue
        shared = comparable(runs)
        outcomes = outcome_matrix(runs, shared, COMPARED_SCORER)
        reference = [runs[0].scored[i] for i in shared]
        images = cluster_codes(np.array([r.image_id for r in reference]))
        groups = paper_groups(reference)
        for name in sorted((g for g in groups if g in COMPARED_GROUPS), key=group_order):
            idx = np.array(groups[name], dtype=int)
            for d in differences(outcomes, images, idx, [run.label for run in runs],
                                 paired_test, seed):
                tests.append({"condition": condition, "family": family, "group": name,
                              "n": int(idx.size), "reference": runs[0].label,
                              "other": d["run"], "difference": d["difference"],
                              "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p": d["p"]})
    return tests


# ---------------------------------------------------------------------------------------------
# Rendering: one list of tables, written as Markdown and as HTML


def _ci(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("accuracy") is None:
        return "–"
    return f"{pct(stat['accuracy'])} [{pct(stat['cluster_ci_low'])}, {pct(stat['cluster_ci_high'])}]"


def _tau(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _tables(result: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    m = result["metric"]
    metric = f"{m['scorer']} {m['group']}"
    out = []
    for condition in result["conditions"]:
        rows = [r for r in result["leaderboard"] if r["condition"] == condition]
        out.append((f"Leaderboard ({condition})",
                    f"Accuracy % with 95% CIs clustered by image ({result['intervals']['leaderboard']}"
                    "; inside [0, 100]); the same numbers as each cell's summary.json. Sorted by "
                    f"{metric}.",
                    ["model", "template", "n", "official coarse", "official fine",
                     "robust coarse", "robust fine", "invalid %", "errors"],
                    [[r["model"], r["template"], str(r["n_scored"]), _ci(r["official/coarse"]),
                      _ci(r["official/fine"]), _ci(r["robust/coarse"]), _ci(r["robust/fine"]),
                      pct(r["invalid_rate"]), str(r["n_errors"])]
                     for r in sorted(rows, key=lambda r: -(r["metric"] or 0))]))
        sens = [s for s in result["sensitivity"] if s["condition"] == condition]
        out.append((f"Prompt sensitivity ({condition})",
                    f"Per model, the spread (max − min) of {metric} accuracy across templates in "
                    "percentage points, on the items every template scored, with a 95% CI "
                    f"({result['intervals']['spread']}). The spread of noisy accuracies is biased "
                    "upwards, so its CI can exclude 0 when the templates make no difference; p "
                    "is the share of permutations of the template labels within each image whose "
                    "spread is at least as large (small p: the prompt matters).",
                    ["model", "n", "spread [95% CI]", "p (no template effect)", "best template",
                     "worst template"],
                    [[s["model"], str(s["n"]),
                      "–" if s["spread"] is None else
                      f"{100 * s['spread']:.2f} [{100 * s['ci_low']:.2f}, {100 * s['ci_high']:.2f}]",
                      "–" if s["spread"] is None else f"{s['p_no_template_effect']:.3g}",
                      s.get("best_template", "–"), s.get("worst_template", "–")] for s in sens]))
        st = next(s for s in result["rank_stability"] if s["condition"] == condition)
        out.append((f"Rank stability ({condition})",
                    f"Kendall's τ-b between the rankings of the models by {metric} under two "
                    f"templates (+1 same order, −1 reversed); mean τ {_tau(st['mean_tau'])}. The top "
                    f"model differs from the one under {st['reference_template']} in "
                    f"{st['top_changes']} of {st['templates_compared']} templates.",
                    ["templates", "τ", "top model(s)"],
                    [[f"{p['templates'][0]} vs {p['templates'][1]}", _tau(p["tau"]),
                      f"{', '.join(st['top_model'][p['templates'][0]])} / "
                      f"{', '.join(st['top_model'][p['templates'][1]])}"] for p in st["pairs"]]))
    comp = result["comparisons"]
    out.append(("Paired comparisons",
                f"Differences in percentage points (robust scorer) with a 95% CI "
                f"({result['intervals']['differences']}); p from the exact paired test that swaps "
                f"answers image by image, Holm-adjusted across all {comp['n_tests']} tests of the "
                f"study; significant = adjusted p < {comp['alpha']} (bold).",
                ["condition", "family", "group", "n", "comparison", "difference [95% CI]", "p",
                 "p Holm (study)"],
                [[t["condition"], t["family"], t["group"], str(t["n"]),
                  f"{t['other']} − {t['reference']}", _bold(t, _difference(t)),
                  f"{t['p']:.3g}", _bold(t, f"{t['p_holm_study']:.3g}")] for t in comp["tests"]]))
    return out


def _difference(t: dict[str, Any]) -> str:
    return (f"{100 * t['difference']:+.2f} [{100 * t['ci_low']:+.2f}, "
            f"{100 * t['ci_high']:+.2f}]")


def _bold(t: dict[str, Any], text: str) -> str:
    return f"**{text}**" if t["significant"] else text


def study_markdown(name: str, result: dict[str, Any], heatmaps: dict[str, str]) -> str:
    """study.md: heatmaps, ranking stability and the paired template comparisons."""
    lines = [f"# Study {name}", "",
             f"{len(result['models'])} models × {len(result['templates'])} templates × "
             f"{len(result['conditions'])} condition(s); ranking metric: "
             f"{result['metric']['scorer']} {result['metric']['group']}.", ""]
    for condition, path in heatmaps.items():
        lines += [f"![accuracy heatmap, {condition}]({path})", ""]
    for title, text, head, rows in _tables(result):
        lines += [f"## {title}", "", text, "", *md_table(head, rows), ""]
    return "\n".join(lines)


def study_html(name: str, result: dict[str, Any], folder: Path, heatmaps: dict[str, str]) -> str:
    """study.html: the tables of `study_markdown` with the heatmaps inlined."""
    body = "".join(
        f"<figure><img alt=\"heatmap {html.escape(c)}\" src=\"data:image/png;base64,"
        f"{base64.b64encode((folder / p).read_bytes()).decode()}\"></figure>"
        for c, p in heatmaps.items())
    for title, text, head, rows in _tables(result):
        cells = [[html.escape(c.strip("*")) if not c.startswith("**") else
                  f"<strong>{html.escape(c.strip('*'))}</strong>" for c in row] for row in rows]
        body += (f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>"
                 + table(head, cells) + "</section>")
    return html_page(f"uBench study: {name}", body)


def write_heatmaps(result: dict[str, Any], folder: Path) -> dict[str, str]:
    """One model × template heatmap of the metric per condition; paths relative to `folder`."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return {}
    out = {}
    models, templates = result["models"], result["templates"]
    for i, condition in enumerate(result["conditions"]):
        values = np.full((len(models), len(templates)), np.nan)
        for r in result["leaderboard"]:
            if r["condition"] == condition and r["metric"] is not None:
                values[models.index(r["model"]), templates.index(r["template"])] = 100 * r["metric"]
        fig = Figure(figsize=(1.6 * len(templates) + 2.5, 0.6 * len(models) + 1.8), dpi=110)
        ax = fig.add_subplot()
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for (y, x), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(x, y, f"{v:.1f}", ha="center", va="center",
                        color="white" if v < 60 else "black", fontsize=9)
        ax.set_xticks(range(len(templates)), templates, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(len(models)), models, fontsize=8)
        m = result["metric"]
        ax.set_title(f"{m['scorer']} {m['group']} accuracy % · {condition}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
        name = HEATMAP if i == 0 else f"heatmap-{i + 1}.png"
        fig.savefig(folder / name)
        out[condition] = name
    return out


def write_study(name: str, cells: list[dict[str, Any]], metric: dict[str, str], folder: Path,
                spec: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """study.json, study.md, study.html and the heatmaps in `folder`; returns the result."""
    folder = Path(folder)
    result = study_result(cells, metric, seed=seed)
    heatmaps = write_heatmaps(result, folder)
    write_json(folder / STUDY_JSON, {"name": name, "study": spec, **result, "heatmaps": heatmaps,
                                     "cells": [{k: v for k, v in c.items() if k != "summary"}
                                               for c in cells]})
    write_text(folder / STUDY_MD, study_markdown(name, result, heatmaps))
    write_text(folder / STUDY_HTML, study_html(name, result, folder, heatmaps))
    return result

