"""Phone numbers: normalise to E.164, mask for display and logs."""

from __future__ import annotations

import phonenumbers

from core.errors import InvalidInput


class InvalidPhone(InvalidInput):
    """The text is not a dialable phone number."""

    error_id = "invalid-phone"
    message = "电话号码不正确"


def normalise_phone(raw: str, *, region: str = "CN") -> str:
    """Return the E.164 form of a phone number typed or received in any usual way."""
    text = raw.strip().replace(" ", "").replace("-", "")
    # Trunk prefixes from the PBX ("0086…", "86…" without "+") are common in caller ids.
    if text.startswith("0086"):
        text = "+86" + text[4:]
    elif text.startswith("86") and len(text) == 13:
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as err:
        raise InvalidPhone(details={"value": mask_phone(raw)}) from err
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(details={"value": mask_phone(raw)})
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(value: str | None) -> str:
    """Mask the middle of a number: +8613812345678 → 138****5678."""
    if not value:
        return ""
    digits = value.removeprefix("+86") if value.startswith("+86") else value.lstrip("+")
    if len(digits) <= 4:
        return "*" * len(digits)
    if len(digits) <= 7:
        return digits[:1] + "*" * (len(digits) - 3) + digits[-2:]
    return digits[:3] + "****" + digits[-4:]


def mask_openid(value: str | None) -> str:
    """Mask a WeChat openid, keeping enough to tell two apart in a log."""
    if not value:
        return ""
    return value[:4] + "…" + value[-3:] if len(value) > 8 else "…"
