"""`make demo`: the test server stands in for a chat VLM over HTTP, two templates, the reports and
the comparison, and the server stopped; the stand-in's answer formats are all readable."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import pytest

from harness.score.parsing import parse_answer
from harness.servers import demo as demo_module
from harness.servers.testserver import MIXED_FORMATS, TestServer


def test_demo_evaluates_a_stand_in_vlm_over_http_and_stops_it(tmp_path, monkeypatch, capsys):
    started: list[TestServer] = []
    real_enter = TestServer.__enter__

    def remember(self):
        started.append(self)
        return real_enter(self)

    monkeypatch.setattr(TestServer, "__enter__", remember)
    assert demo_module.demo(tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert "Significant after Holm" in out and "compare.html" in out
    (server,) = started
    assert server.stats.requests == 2 * 136  # every question, both templates, over HTTP
    with pytest.raises(OSError):  # the server is stopped
        socket.create_connection((urlparse(server.base_url).hostname, server.port), timeout=2)
    for template in ("official", "cot"):
        folder = tmp_path / "demo" / template
        assert (folder / "report.html").exists()
        records = [json.loads(line) for line in (folder / "samples.jsonl").open()]
        assert len({r["rule"] for r in records}) >= 4  # the parser saw varied formats
        summary = json.loads((folder / "summary.json").read_text())
        for groups in summary["scorers"].values():  # intervals outside the paper's: in [0, 1]
            for stat in groups.values():
                assert 0 <= stat["cluster_ci_low"] <= stat["accuracy"] <= stat["cluster_ci_high"] <= 1
    comparison = json.loads((tmp_path / "demo" / "compare.json").read_text())
    for row in comparison["groups"]:
        for d in row["differences"]:
            assert -1 <= d["ci_low"] <= d["difference"] <= d["ci_high"] <= 1


@pytest.mark.parametrize("form", MIXED_FORMATS)
def test_every_mixed_answer_format_is_read_as_the_letter_it_commits_to(form):
    options = {"A": "lymphocyte", "B": "neutrophil", "C": "basophil"}
    reply = form.format(letter="B", text="neutrophil")
    expected = None if "cannot determine" in form else "B"
    assert parse_answer(reply, options).letter == expected, reply
