"""Hosted providers by name: `gemini/MODEL` → the provider's OpenAI-compatible endpoint and key.

Each preset is an endpoint, the environment variable its key is usually in, how the key is sent,
and what the provider's OpenAI-compatible layer is known not to support (README, "Paid APIs").
`--base-url` always overrides the endpoint.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

AZURE_API_VERSION = "2024-10-21"  # a GA version of the Azure OpenAI data-plane API
# OpenAI families that take max_completion_tokens and only the default temperature.
_REASONING = re.compile(r"^(o\d|gpt-5)")


@dataclass(frozen=True)
class Preset:
    """A hosted provider's fixed settings, so `--model provider:name` needs no URL or flags."""
    name: str
    base_url: str | None  # None: needs something from the environment (Azure's resource)
    key_env: str
    image_detail: str | None = None  # sent with every image; None: leave it to the provider
    auth: str = "bearer"  # "bearer": Authorization: Bearer KEY; "api-key": api-key: KEY
    unsupported: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", image_detail="high"),
    Preset("azure", None, "AZURE_OPENAI_API_KEY", image_detail="high", auth="api-key",
           unsupported="the Batch API through --batch (Azure's batches use other deployments)"),
    Preset("gemini", "https://generativelanguage.googleapis.com/v1beta/openai",
           "GEMINI_API_KEY", unsupported="image detail, logprobs, seed"),
    Preset("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY",
           unsupported="image detail, logprobs, seed (ignored), --batch"),
    Preset("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY",
           unsupported="--batch; what else depends on the model routed to"),
    Preset("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY",
           unsupported="image detail, --batch"),
)}


def is_reasoning_model(model: str) -> bool:
    """OpenAI o-series and GPT-5 models: max_completion_tokens, default temperature only."""
    return bool(_REASONING.match(model.rsplit("/", 1)[-1]))


def endpoint(preset: Preset, model: str, api_version: str | None) -> tuple[str | None, str]:
    """The preset's base URL for `model` and the query string its requests carry."""
    if preset.name != "azure":
        base = os.environ.get("OPENAI_BASE_URL") if preset.name == "openai" else None
        return base or preset.base_url, ""
    version = api_version or os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION
    resource = os.environ.get("AZURE_OPENAI_ENDPOINT")
    base = f"{resource.rstrip('/')}/openai/deployments/{model}" if resource else None
    return base, f"api-version={version}"
