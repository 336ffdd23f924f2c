"""Phone numbers to E.164 with `phonenumbers`, for users and contacts alike.

Outlook and Entra hold numbers as people typed them ("020 123 4567",
"+31 (0)6-12345678"); ClearVox wants E.164. A number without a country code
is read in the default region (NEXXT365_DEFAULT_REGION, NL by default).
"""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "NL"


class UnparseablePhone(ValueError):
    """The text is not a dialable number; `str()` says which and why."""


def to_e164(text: str, region: str = DEFAULT_REGION) -> str:
    """Normalise `text` to E.164 or raise UnparseablePhone."""
    raw = (text or "").strip()
    if not raw:
        raise UnparseablePhone("empty phone number")
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise UnparseablePhone(f"cannot read phone number {raw!r}: {exc}") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise UnparseablePhone(f"{raw!r} is not a valid phone number (read in region {region})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def to_e164_or_none(text: str | None, region: str = DEFAULT_REGION) -> str | None:
    """E.164 or None when the text is empty or unparseable (callers report the latter)."""
    if not text or not text.strip():
        return None
    try:
        return to_e164(text, region)
    except UnparseablePhone:
        return None
