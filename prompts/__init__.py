"""Prompt templates: YAML files validated by a JSON Schema, rendered into chat messages.

Rendered messages are provider-neutral: image parts stay `{"type": "image"}` (the Hugging Face
chat-template form); each adapter turns them into its wire format, so logs never hold base64.
"""
from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jsonschema
import yaml

PROMPTS_DIR = Path(__file__).parent
SCHEMA = json.loads((PROMPTS_DIR / "schema.json").read_text())
PLACEHOLDERS = {"question", "options", "letters"}
OPTION_PLACEHOLDERS = {"letter", "text"}


class TemplateError(ValueError):
    """A template file is invalid, or cannot render an item."""


@dataclass(frozen=True)
class Template:
    """A checked prompt template: chat turns with placeholders and how options are shown."""
    name: str
    description: str
    messages: tuple[dict[str, Any], ...]
    option_format: str
    option_separator: str
    sha256: str  # of the canonical JSON of the validated template
    path: str
    examples: dict[str, Any] | None = None  # few-shot settings, defaults filled in (see schema)

    def describe(self) -> dict[str, str]:
        """Name, content hash and path, for the manifest."""
        return {"name": self.name, "sha256": self.sha256, "path": self.path}


def builtin_names() -> list[str]:
    """The names of the templates shipped in prompts/, for `--prompt` and listings."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def load_template(name_or_path: str) -> Template:
    """Load a built-in template by name, or any template file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise TemplateError(
                f"unknown prompt {name_or_path!r}; built-in: {', '.join(builtin_names())}, "
                "or pass a path to a .yaml file"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read template: {exc}") from exc
    return template_from_dict(data, str(path))


def template_from_dict(data: Any, origin: str = "<dict>") -> Template:
    """A template from parsed YAML/JSON, validated against the schema (errors name the field)."""
    try:
        jsonschema.validate(data, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise TemplateError(f"{origin}: field {where}: {exc.message}") from exc
    option_format = data.get("option_format", "{letter}) {text}")
    _check_placeholders(option_format, OPTION_PLACEHOLDERS, f"{origin}: field option_format")
    for i, msg in enumerate(data["messages"]):
        for j, part in enumerate(msg["content"]):
            if part["type"] == "text":
                _check_placeholders(part["text"], PLACEHOLDERS,
                                    f"{origin}: field messages/{i}/content/{j}/text")
    examples = _examples_settings(data.get("examples"), origin)
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return Template(
        name=data["name"],
        description=data["description"].strip(),
        messages=tuple(data["messages"]),
        option_format=option_format,
        option_separator=data.get("option_separator", "\n"),
        sha256=hashlib.sha256(canonical.encode()).hexdigest(),
        path=origin,
        examples=examples,
    )


def _examples_settings(raw: dict[str, Any] | None, origin: str) -> dict[str, Any] | None:
    """The few-shot block with the schema's defaults filled in, checked beyond the schema."""
    if raw is None:
        return None
    defaults = {k: v["default"] for k, v in
                SCHEMA["properties"]["examples"]["properties"].items() if "default" in v}
    settings = {**defaults, **raw}
    where = f"{origin}: field examples"
    _check_placeholders(settings["answer"], OPTION_PLACEHOLDERS, f"{where}/answer")
    if settings["select"] == "same_dataset" and settings["exclude_same_dataset"]:
        raise TemplateError(f"{where}: select same_dataset and exclude_same_dataset contradict "
                            "each other")
    if settings["bank_size"] <= settings["k"]:
        raise TemplateError(f"{where}/bank_size: must exceed k ({settings['k']}), so that "
                            "leaving out the evaluated image still leaves k examples")
    return settings


def _check_placeholders(text: str, allowed: set[str], where: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc} (write literal braces as {{{{ and }}}})") from exc
    unknown = fields - allowed
    if unknown:
        raise TemplateError(f"{where}: unknown placeholder(s) {sorted(unknown)}; "
                            f"allowed: {sorted(allowed)}")


def render(template: Template, question: str, options: dict[str, str],
           shots: Sequence[Shot] = ()) -> list[dict[str, Any]]:
    """Chat messages for one item; `options` maps letters to option texts in display order.

    With `shots` (few-shot), the template's system turns come first, then each example as the
    template's other turns asked about the example's image (parts `{"type": "image",
    "image_id": ...}`) and answered by an assistant turn in `examples.answer`'s format, then the
    item itself.
    """
    if not shots:
        return _turns(template, template.messages, question, options)
    assert template.examples is not None, "few-shot shots for a template without examples"
    system = [m for m in template.messages if m["role"] == "system"]
    asked = [m for m in template.messages if m["role"] != "system"]
    messages = _turns(template, system, question, options)
    for shot in shots:
        messages += _turns(template, asked, shot.question, shot.options, shot.image_id)
        answer = template.examples["answer"].format(letter=shot.gold_letter,
                                                    text=shot.options[shot.gold_letter])
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages + _turns(template, asked, question, options)


@dataclass(frozen=True)
class Shot:
    """One worked example as a prompt shows it: its image (by id), question, options, gold."""

    image_id: str
    question: str
    options: dict[str, str]
    gold_letter: str


def _turns(template: Template, turns, question: str, options: dict[str, str],
           image_id: str | None = None) -> list[dict[str, Any]]:
    lines = template.option_separator.join(
        template.option_format.format(letter=letter, text=text) for letter, text in options.items()
    )
    values = {"question": question, "options": lines, "letters": ", ".join(options)}
    image = {"type": "image", "image_id": image_id} if image_id else {"type": "image"}
    messages = []
    for msg in turns:
        content = [
            {"type": "text", "text": part["text"].format(**values)} if part["type"] == "text"
            else dict(image)
            for part in msg["content"]
        ]
        messages.append({"role": msg["role"], "content": content})
    return messages
