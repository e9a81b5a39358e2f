"""Provider presets, reasoning-model parameters and --extra-body, through the CLI."""
from __future__ import annotations

import json

import pytest

from harness.adapters import create_adapter
from harness.servers.testserver import TestServer
from tests.conftest import ubench


@pytest.mark.parametrize("spec, key, url", [
    ("gemini/gemini-2.5-flash", "GEMINI_API_KEY",
     "https://generativelanguage.googleapis.com/v1beta/openai"),
    ("anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY", "https://api.anthropic.com/v1"),
    ("openrouter/openai/gpt-4o", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"),
    ("together/meta-llama/Llama-4-Scout", "TOGETHER_API_KEY", "https://api.together.xyz/v1"),
    ("openai/gpt-4o", "OPENAI_API_KEY", "https://api.openai.com/v1"),
])
def test_presets_resolve_endpoint_and_key_variable(monkeypatch, spec, key, url):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=key):
        create_adapter(spec)
    monkeypatch.setenv(key, "sk-secret")
    adapter = create_adapter(spec)
    assert adapter.base_url == url and adapter.model == spec.split("/", 1)[1]
    assert "sk-secret" not in repr(adapter) + json.dumps(adapter.describe())
    assert create_adapter(spec, base_url="http://127.0.0.1:9/v1").base_url == "http://127.0.0.1:9/v1"


def test_azure_deployment_url_api_version_and_api_key_header(tmp_path, monkeypatch):
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-secret")
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        create_adapter("azure/my-gpt4o")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/")
    adapter = create_adapter("azure/my-gpt4o", api_version="2025-01-01-preview")
    assert adapter.base_url == "https://res.openai.azure.com/openai/deployments/my-gpt4o"
    with TestServer("random") as server:
        server.stats.keep_bodies = True
        ubench("run", "--model", "azure/my-gpt4o", "--base-url", server.base_url, "--limit", "2",
               "--api-version", "2025-01-01-preview", "--output", str(tmp_path / "az"),
               env={"AZURE_OPENAI_API_KEY": "az-secret"})
        seen = server.stats.requests_seen[0]
    assert seen["path"] == "/v1/chat/completions?api-version=2025-01-01-preview"
    assert seen["api-key"] == "az-secret" and seen["authorization"] is None
    assert "az-secret" not in (tmp_path / "az" / "manifest.json").read_text()


def test_reasoning_models_get_their_parameters_and_extra_body_goes_verbatim(tmp_path):
    out = tmp_path / "o4"
    extra = {"chat_template_kwargs": {"enable_thinking": False}, "service_tier": "flex"}
    with TestServer("random") as server:
        server.stats.keep_bodies = True
        ubench("run", "--model", "openai/o4-mini", "--base-url", server.base_url, "--limit", "2",
               "--max-tokens", "300", "--reasoning-effort", "low", "--extra-body",
               json.dumps(extra), "--output", str(out))
        body = server.stats.bodies[0]
        ubench("run", "--model", "openai/gpt-4o", "--base-url", server.base_url, "--limit", "1",
               "--output", str(tmp_path / "4o"))
        plain = server.stats.bodies[-1]
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert "temperature" not in body and body["reasoning_effort"] == "low"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["service_tier"] == "flex"
    assert plain["max_tokens"] == 1024 and plain["temperature"] == 0.0
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert model["extra_body"] == extra and model["reasoning_effort"] == "low"

    proc = ubench("run", "--model", "openai/o4-mini", "--base-url", "http://127.0.0.1:9/v1",
                  "--extra-body", "[1]", "--output", str(tmp_path / "bad"), check=False)
    assert proc.returncode == 2 and "--extra-body" in proc.stderr and "JSON object" in proc.stderr
