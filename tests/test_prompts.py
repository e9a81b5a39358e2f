"""Prompt templates: schema validation, rendering, the official prompt byte for byte."""
from __future__ import annotations

import json

import pytest

from harness.prompts import TemplateError, builtin_names, load_template, render
from tests.conftest import ubench


def official_prompt(question: str, options: list[str]) -> str:
    """The paper's code, written out independently of the template file."""
    lettered = [f"{chr(65 + i)}) {o}" for i, o in enumerate(options)]
    return ("Answer with a single letter, no extra details." + "\n" + "Question:" + question
            + "\n" + "\n".join(lettered))


def test_official_prompt_is_byte_identical_on_the_real_rows(real10):
    template = load_template("official")
    for q in map(json.loads, (real10 / "questions.jsonl").open()):
        options = {chr(65 + i): o for i, o in enumerate(q["options"])}
        (message,) = render(template, q["question"], options)
        assert message["role"] == "user"
        assert message["content"][0] == {"type": "image"}
        assert message["content"][1]["text"] == official_prompt(q["question"], q["options"])


def test_builtin_templates_load_and_render():
    assert {"official", "cot", "answer-tag"} <= set(builtin_names())
    cot = render(load_template("cot"), "Which cell?", {"A": "x", "B": "y"})
    text = cot[0]["content"][1]["text"]
    assert 'The answer is (X)' in text and "(A) x\n(B) y" in text
    tag = render(load_template("answer-tag"), "Which cell?", {"A": "x", "B": "y", "C": "z"})
    assert tag[0]["role"] == "system" and "ANSWER: X" in tag[1]["content"][1]["text"]
    assert "A, B, C" in tag[1]["content"][1]["text"]


def test_template_hash_changes_with_content(tmp_path):
    src = (load_template("official").path)
    text = open(src).read()
    (tmp_path / "mine.yaml").write_text(text.replace("single letter", "single capital letter"))
    assert load_template(str(tmp_path / "mine.yaml")).sha256 != load_template("official").sha256


@pytest.mark.parametrize("body, message", [
    ("name: x\nmessages: []\n", "description"),
    ("name: x\ndescription: d\nmessages:\n  - role: user\n    content:\n      - type: video\n",
     "messages/0/content/0"),
    ("name: x\ndescription: d\nmessages:\n  - role: user\n    content:\n"
     "      - type: text\n        text: '{question} {answr}'\n", "answr"),
    ("name: x\ndescription: d\noption_format: '{letter} {txt}'\nmessages:\n  - role: user\n"
     "    content:\n      - type: text\n        text: hi\n", "option_format"),
])
def test_invalid_templates_name_the_field(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(TemplateError, match=message):
        load_template(str(path))


def test_unknown_template_lists_the_builtins():
    with pytest.raises(TemplateError, match="official"):
        load_template("nope")


def test_prompts_command_lists_templates():
    out = ubench("prompts").stdout
    for name in ("official", "cot", "answer-tag"):
        assert name in out


def test_builtin_templates_cover_the_study_axes_and_say_what_they_vary():
    import yaml

    from harness.prompts import PROMPTS_DIR

    names = set(builtin_names())
    assert {"official", "expert-microscopist", "official-paraphrase-1", "official-paraphrase-2",
            "few-shot-3", "cot", "answer-tag"} <= names
    for name in names - {"official"}:
        raw = yaml.safe_load((PROMPTS_DIR / f"{name}.yaml").read_text())
        assert raw.get("source") and "Varies:" in raw["description"], name
    system = render(load_template("expert-microscopist"), "Which cell?", {"A": "x", "B": "y"})
    assert system[0]["role"] == "system" and "microscopist" in system[0]["content"][0]["text"]
    official = render(load_template("official"), "Which cell?", {"A": "x", "B": "y"})
    assert system[1] == official[0]  # the user turn is the official one, byte for byte
    for name in ("official-paraphrase-1", "official-paraphrase-2"):
        text = render(load_template(name), "Which cell?", {"A": "x", "B": "y"})[0]["content"][1]
        assert "A) x\nB) y" in text["text"] and text["text"] != official[0]["content"][1]["text"]
