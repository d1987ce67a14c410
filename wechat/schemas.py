"""Configuration shapes of the WeChat bot: template messages per notice and the custom menu."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

NOTICE_TEMPLATES = ("accepted", "dispatched", "closed", "rated")
FieldKey = Annotated[str, StringConstraints(pattern=r"^[a-z_]+\d*$", max_length=40)]


class TemplateConfig(BaseModel):
    """One notice's template message: the template id from the console and its field mapping.

    `fields` maps a template field key (`thing2`, `character_string1`, `time3`, …) to a pattern with
    `{placeholders}` from the notice: case_number, case_type, step, department, deadline, note, time.
    """

    model_config = ConfigDict(extra="forbid")

    template_id: Annotated[str, StringConstraints(max_length=128)] = ""
    url: Annotated[str, StringConstraints(max_length=512)] | None = None
    fields: dict[FieldKey, Annotated[str, StringConstraints(max_length=200)]] = Field(default_factory=dict)


def load_templates(raw: dict[str, Any]) -> dict[str, TemplateConfig]:
    """Validate INTAKE_WECHAT_TEMPLATES (fails at start-up rather than at the first notice)."""
    unknown = set(raw) - set(NOTICE_TEMPLATES)
    if unknown:
        raise ValueError(f"INTAKE_WECHAT_TEMPLATES has unknown notices {sorted(unknown)}; "
                         f"known: {', '.join(NOTICE_TEMPLATES)}")
    return {name: TemplateConfig.model_validate(value) for name, value in raw.items()}


ButtonType = Literal["click", "view", "location_select", "pic_photo_or_album", "pic_sysphoto", "scancode_push"]


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8"))


class SubButton(BaseModel):
    """A second-level menu button (name ≤ 60 bytes)."""

    model_config = ConfigDict(extra="forbid")

    type: ButtonType
    name: str
    key: Annotated[str, StringConstraints(max_length=128)] | None = None
    url: Annotated[str, StringConstraints(max_length=1024)] | None = None

    @field_validator("name")
    @classmethod
    def _name_length(cls, value: str) -> str:
        """WeChat limits sub-menu names to 60 bytes."""
        if not value or _utf8_len(value) > 60:
            raise ValueError("sub-menu names are 1-60 bytes")
        return value

    @model_validator(mode="after")
    def _key_or_url(self) -> SubButton:
        """A view button needs a URL, every other type a key."""
        if self.type == "view" and not self.url:
            raise ValueError("view buttons need a url")
        if self.type != "view" and not self.key:
            raise ValueError(f"{self.type} buttons need a key")
        return self


class Button(SubButton):
    """A top-level button (name ≤ 16 bytes), either an action or up to 5 sub-buttons."""

    type: ButtonType | None = None  # type: ignore[assignment]
    sub_button: list[SubButton] = Field(default_factory=list, max_length=5)

    @field_validator("name")
    @classmethod
    def _name_length(cls, value: str) -> str:
        """WeChat limits top-level names to 16 bytes."""
        if not value or _utf8_len(value) > 16:
            raise ValueError("top-level menu names are 1-16 bytes")
        return value

    @model_validator(mode="after")
    def _key_or_url(self) -> Button:
        """Either sub-buttons or an action of its own."""
        if self.sub_button:
            return self
        if self.type is None:
            raise ValueError("a button without sub-buttons needs a type")
        if self.type == "view" and not self.url:
            raise ValueError("view buttons need a url")
        if self.type != "view" and not self.key:
            raise ValueError(f"{self.type} buttons need a key")
        return self


class Menu(BaseModel):
    """The custom menu: 1-3 top-level buttons."""

    model_config = ConfigDict(extra="forbid")

    button: list[Button] = Field(min_length=1, max_length=3)

    def payload(self) -> dict[str, Any]:
        """The JSON body of menu/create."""
        return {"button": [_clean(b.model_dump(exclude_none=True, mode="json")) for b in self.button]}


def _clean(button: dict[str, Any]) -> dict[str, Any]:
    if not button.get("sub_button"):
        button.pop("sub_button", None)
    return button


DEFAULT_MENU = Menu.model_validate({"button": [
    {"type": "click", "name": "我要上报", "key": "REPORT"},
    {"name": "我的案件", "sub_button": [
        {"type": "click", "name": "我的案件", "key": "MY_CASES"},
        {"type": "click", "name": "评价案件", "key": "RATE"},
        {"type": "click", "name": "我的积分", "key": "POINTS"},
        {"type": "click", "name": "绑定手机", "key": "BIND"},
    ]},
    {"name": "办事指南", "sub_button": [
        {"type": "click", "name": "使用帮助", "key": "HELP"},
        {"type": "click", "name": "常见问题", "key": "FAQ"},
    ]},
]})
