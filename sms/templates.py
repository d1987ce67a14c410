"""Notice texts per template, rendered in a sandbox, with their variables for the template gateways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from sms.client import strip_astral

TEMPLATES_FILE = Path(__file__).with_name("templates.yaml")
_VARIABLE = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)")
# Template gateways cap each variable (Aliyun: 35 characters for notices); long values are cut, not refused.
MAX_PARAM_CHARS = 35


class UnknownTemplate(KeyError):
    """No text is configured under this template name."""


def _short(value: object, length: int) -> str:
    """Cut a value to `length` characters, marking the cut."""
    text = "" if value is None else str(value)
    return text if len(text) <= length else text[: max(length - 1, 1)] + "…"


class SmsTemplates:
    """Notice texts per template name (operators can replace the file: INTAKE_SMS_TEMPLATES_PATH)."""

    def __init__(self, texts: dict[str, str], *, signature: str) -> None:
        """Compile the texts; a broken template fails here, at start-up, not at 3 a.m."""
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        env.filters["short"] = _short
        try:
            self._templates = {name: env.from_string(text) for name, text in texts.items()}
        except TemplateSyntaxError as err:
            raise ValueError(f"SMS template syntax error: {err}") from err
        self._variables = {name: list(dict.fromkeys(_VARIABLE.findall(text))) for name, text in texts.items()}
        self._texts = dict(texts)
        self.signature = signature

    def overlaid(self, edits: dict[str, str]) -> SmsTemplates:
        """Return templates with `edits` replacing texts; variables stay the file's (provider templates)."""
        if not edits:
            return self
        merged = SmsTemplates({**self._texts, **edits}, signature=self.signature)
        merged._variables = {**merged._variables, **self._variables}
        return merged

    @classmethod
    def load(cls, *, signature: str, path: Path | None = None) -> SmsTemplates:
        """Read templates.yaml (or a city's replacement)."""
        texts = yaml.safe_load((path or TEMPLATES_FILE).read_text(encoding="utf-8")) or {}
        if not isinstance(texts, dict):
            raise ValueError("SMS templates file must map template names to texts")
        return cls({str(k): str(v) for k, v in texts.items()}, signature=signature)

    @property
    def names(self) -> list[str]:
        """Configured template names."""
        return sorted(self._templates)

    def variables(self, template: str) -> list[str]:
        """The template's variables in order of first appearance (Tencent's {1}, {2}, …)."""
        if template not in self._variables:
            raise UnknownTemplate(template)
        return list(self._variables[template])

    def render(self, template: str, params: dict[str, Any]) -> str:
        """Return the full SMS text with the 【signature】 first."""
        if template not in self._templates:
            raise UnknownTemplate(template)
        values = {k: ("" if v is None else v) for k, v in params.items()}
        body = self._templates[template].render(**values)
        return strip_astral(f"【{self.signature}】{body}")

    def provider_params(self, template: str, params: dict[str, Any]) -> dict[str, str]:
        """Return the variables a template gateway fills in, as strings, in template order."""
        return {
            name: _short(strip_astral(str(params.get(name) or "")), MAX_PARAM_CHARS)
            for name in self.variables(template)
        }
