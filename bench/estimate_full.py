"""What the full benchmark costs on a hosted model: the --dry-run arithmetic on uBench's image sizes.


    python bench/estimate_full.py [--model openai/gpt-4o] [--text-tokens 60] [--output-tokens 2]

Image sizes per source dataset come from the replica generator's table (harness/data/synthetic.py,
REPLICA_DATASETS: the paper's 22 datasets, 16,130 images; acevedo_et_al_2020's 360x363 is confirmed
on the real rows in shared/ubench/real10, the others are that table's reading of the datasets'
public descriptions). Every image has one fine question and five coarse ones, less the stain
question where the stain is null (934 images): 95,846 requests, as in PROTOCOL.md. Text tokens per
request default to the official prompt's mean on the bundled sample (o200k: 58.4); output tokens
to the price table's assumption for the official prompt (a single letter).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.synthetic import REPLICA_DATASETS, replica_profile  # noqa: E402
from harness.score.pricing import find_price, image_tokens, load_table  # noqa: E402

LEFT_OUT = {"opencell", "sirinukunwattana_et_al_2016"}  # not in the paper's tables


def mean_tokens(rule: dict, widths: tuple[int, int], heights: tuple[int, int],
                detail: str) -> float:
    """Tokens per image averaged over the size range (the replica draws sizes uniformly)."""
    ws, hs = range(widths[0], widths[1] + 1), range(heights[0], heights[1] + 1)
    return sum(image_tokens(rule, w, h, detail) for w in ws for h in hs) / (len(ws) * len(hs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="openai/gpt-4o")
    parser.add_argument("--detail", default="high", choices=["high", "low"])
    parser.add_argument("--text-tokens", type=float, default=60.0)
    parser.add_argument("--output-tokens", type=float, default=2.0)
    args = parser.parse_args(argv)
    price = find_price(args.model, load_table())
    if price is None or price.image_rule is None:
        sys.exit(f"{args.model}: no price or image rule in the price table")
    print("| dataset | images | size (px) | questions | tokens/image (no upscale) | (upscale) |")
    print("|---|---|---|---|---|---|")
    totals = {"requests": 0, "images": 0, False: 0, True: 0}
    for entry in REPLICA_DATASETS:
        slug, prof = replica_profile(entry)
        name = slug or f"held_et_al_2010 ({prof['stain']})"
        if slug in LEFT_OUT:
            continue
        n, widths, heights = entry[1], entry[5], entry[6]
        questions = n * (6 if prof["stain"] is not None else 5)
        per = {up: mean_tokens({**price.image_rule, "upscale_short_side": up}, widths, heights,
                               args.detail) for up in (False, True)}
        totals["requests"] += questions
        totals["images"] += n
        for up in per:
            totals[up] += round(questions * per[up])
        size = "x".join(f"{lo}" if lo == hi else f"{lo}–{hi}" for lo, hi in (widths, heights))
        print(f"| {name} | {n} | {size} | {questions} | {per[False]:.0f} | {per[True]:.0f} |")
    text = totals["requests"] * args.text_tokens
    output = totals["requests"] * args.output_tokens
    print(f"\n{totals['images']:,} images, {totals['requests']:,} requests; "
          f"text {text:,.0f} tokens, output {output:,.0f} tokens (assumed)")
    for up in (False, True):
        cost = price.cost(round(totals[up] + text), round(output))
        print(f"{'upscale' if up else 'no upscale'}: image tokens {totals[up]:,}, "
              f"input {totals[up] + text:,.0f}; cost ${cost:,.2f}, "
              f"Batch API ${cost * price.batch_factor:,.2f} ({price.key}: ${price.input}/1M in, "
              f"${price.output}/1M out, table {price.version})")


if __name__ == "__main__":
    main()
