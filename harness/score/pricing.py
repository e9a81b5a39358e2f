"""What a request costs: the shipped price table (harness/data/pricing.yaml) or a --price-file.

Prices and image-token rules are data, read from the table, never constants in code. A model the
table does not know has price None, and every cost computed from it is None (never 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "data" / "pricing.yaml"
PRICE_FIELDS = ("input", "cached_input", "output", "batch_discount")
MAX_TABLE_BYTES = 1_000_000


class PricingError(ValueError):
    """The price file is unreadable or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Price:
    """One model's prices (USD per 1M tokens) and where they came from."""

    key: str
    input: float
    output: float
    cached_input: float | None = None
    batch_discount: float | None = None
    image_rule: dict[str, Any] | None = None
    image_rule_name: str | None = None
    table: str = ""
    version: str = ""
    source: str = ""

    def describe(self) -> dict[str, Any]:
        """What the manifest records, so a later `ubench score` prices the run the same way."""
        return {"key": self.key, "input": self.input, "cached_input": self.cached_input,
                "output": self.output, "batch_discount": self.batch_discount,
                "image_rule": self.image_rule_name, "image_rule_params": self.image_rule,
                "per": "USD per 1M tokens", "table": self.table, "version": self.version,
                "source": self.source}

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> "Price":
        """The price a run recorded, so a report costs it as it was priced then."""
        return cls(key=data["key"], input=data["input"], output=data["output"],
                   cached_input=data.get("cached_input"), batch_discount=data.get("batch_discount"),
                   image_rule=data.get("image_rule_params"), image_rule_name=data.get("image_rule"),
                   table=data.get("table", ""), version=data.get("version", ""),
                   source=data.get("source", ""))

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             batch: bool = False) -> float:
        """USD for one request's tokens; cached prompt tokens at the cached price where known."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = ((prompt_tokens - cached) * self.input + cached * cached_price
               + completion_tokens * self.output) / 1e6
        return usd * self.batch_factor if batch else usd

    @property
    def batch_factor(self) -> float:
        """The multiplier of batch requests (1.0 where the provider gives no discount)."""
        return 1.0 if self.batch_discount is None else self.batch_discount


def load_table(path: Path | str | None = None) -> dict[str, Any]:
    """The price table, checked: every model entry has numeric prices and a known image rule."""
    path = Path(path) if path else DEFAULT_TABLE
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise PricingError(f"{path}: larger than {MAX_TABLE_BYTES} bytes; not a price table")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PricingError(f"{path}: cannot read the price file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise PricingError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise PricingError(f"{path}: field 'models' must be a mapping of provider/model to prices")
    rules = data.get("image_rules") or {}
    if not isinstance(rules, dict):
        raise PricingError(f"{path}: field 'image_rules' must be a mapping")
    for key, entry in data["models"].items():
        where = f"{path}: models.{key}"
        if not isinstance(entry, dict):
            raise PricingError(f"{where}: must be a mapping of prices")
        for name in PRICE_FIELDS:
            value = entry.get(name)
            required = name in ("input", "output")
            if (value is None and required) or (value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0)):
                raise PricingError(f"{where}.{name}: must be a number ≥ 0"
                                   + ("" if required else " or null"))
        rule = entry.get("image_rule")
        if rule is not None and rule not in rules:
            raise PricingError(f"{where}.image_rule: {rule!r} is not in image_rules")
    for name, rule in rules.items():
        _check_rule(f"{path}: image_rules.{name}", rule)
    expected = data.get("expected_output_tokens") or {}
    if not isinstance(expected, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in expected.values()):
        raise PricingError(f"{path}: field 'expected_output_tokens' must map template names to "
                           "whole numbers ≥ 0")
    data["_path"] = str(path)
    return data


def _check_rule(where: str, rule: Any) -> None:
    needs = {"tiles": ("base", "per_tile", "low", "fit", "short_side", "tile"),
             "patches": ("patch", "max_patches", "multiplier")}
    if not isinstance(rule, dict) or rule.get("method") not in needs:
        raise PricingError(f"{where}.method: must be one of {', '.join(needs)}")
    for name in needs[rule["method"]]:
        value = rule.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PricingError(f"{where}.{name}: must be a number > 0")


def find_price(spec: str, table: dict[str, Any]) -> Price | None:
    """The entry for `provider/model`: the longest key that is a prefix ending at '-' or the end."""
    best = None
    for key in table["models"]:
        if spec == key or spec.startswith(key + "-"):
            if best is None or len(key) > len(best):
                best = key
    if best is None:
        return None
    entry = table["models"][best]
    rule_name = entry.get("image_rule")
    return Price(key=best, input=float(entry["input"]), output=float(entry["output"]),
                 cached_input=entry.get("cached_input"), batch_discount=entry.get("batch_discount"),
                 image_rule=(table.get("image_rules") or {}).get(rule_name),
                 image_rule_name=rule_name, table=table["_path"],
                 version=str(table.get("version", "")), source=str(table.get("source", "")))


def image_tokens(rule: dict[str, Any], width: int, height: int, detail: str | None = "high"
                 ) -> int:
    """Input tokens one image costs under `rule` (see the comments in pricing.yaml)."""
    if rule["method"] == "patches":
        return _patch_tokens(rule, width, height)
    if detail == "low":
        return int(rule["low"])
    w, h = float(width), float(height)
    fit = rule["fit"]
    if max(w, h) > fit:
        scale = fit / max(w, h)
        w, h = w * scale, h * scale
    short = rule["short_side"]
    if min(w, h) > short or rule.get("upscale_short_side"):
        scale = short / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(round(w, 6) / rule["tile"]) * math.ceil(round(h, 6) / rule["tile"])
    return int(rule["base"] + rule["per_tile"] * tiles)


def _patch_tokens(rule: dict[str, Any], width: int, height: int) -> int:
    """The vision guide's patch algorithm: shrink to fit the patch budget, then count patches."""
    p, cap = rule["patch"], rule["max_patches"]
    def count(w: float, h: float) -> int:
        return math.ceil(round(w / p, 6)) * math.ceil(round(h / p, 6))

    patches = count(width, height)
    if patches > cap:
        r = math.sqrt(p * p * cap / (width * height))
        r *= min(math.floor(width * r / p) / (width * r / p),
                 math.floor(height * r / p) / (height * r / p))
        patches = count(width * r, height * r)
    return int(math.ceil(min(patches, cap) * rule["multiplier"]))


def manifest_judge_price(manifest: dict[str, Any] | None) -> Price | None:
    """The judge's prices as the run recorded them; for runs older than that, the shipped table's."""
    if not manifest or not manifest.get("judge"):
        return None
    if "judge_pricing" in manifest:
        return Price.from_manifest(manifest["judge_pricing"]) if manifest["judge_pricing"] else None
    return find_price(manifest["judge"]["model"].get("spec", ""), load_table())


def manifest_price(manifest: dict[str, Any] | None) -> Price | None:
    """The prices a run recorded in its manifest; for runs older than that, the shipped table's."""
    if not manifest:
        return None
    if "pricing" in manifest:
        return Price.from_manifest(manifest["pricing"]) if manifest["pricing"] else None
    return find_price(manifest["model"]["spec"], load_table())
