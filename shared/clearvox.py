"""ClearVox Nexxt API client: the ONLY module that knows the API's paths and JSON field names.

The contract is ../shared/clearvox-api.yaml. Sync modules speak in the
dataclasses below; a correction of a path or field name is a change here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Status codes (ARCHITECTURE.md): available Beschikbaar, away Afwezig, busy Bezig,
# dnd Niet storen, elsewhere Werkt ergens anders.
STATUSES = ("available", "away", "busy", "dnd", "elsewhere")

# The user fields the connector writes (domain names; the client maps them to JSON).
USER_FIELDS = (
    "first_name", "last_name", "display_name", "email", "phone_number", "mobile_number",
    "job_title", "department", "language",
)
# The contact fields the connector writes. Visibility is never among them.
CONTACT_FIELDS = ("external_id", "first_name", "last_name", "display_name", "company", "job_title", "emails", "phone_numbers")


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    office365: bool  # the Office 365 licence is active


@dataclass(frozen=True)
class CvUser:
    id: str
    first_name: str
    last_name: str
    email: str
    external_application_id: str | None
    active: bool = True
    display_name: str | None = None
    phone_number: str | None = None
    mobile_number: str | None = None
    job_title: str | None = None
    department: str | None = None
    language: str = "nl"

    def fields(self) -> dict[str, Any]:
        """The writable fields as a dict keyed by USER_FIELDS."""
        return {name: getattr(self, name) for name in USER_FIELDS}


@dataclass(frozen=True)
class PhoneNumber:
    type: str  # work | mobile | home | other
    number: str  # E.164


@dataclass(frozen=True)
class CvContact:
    id: str
    owner_user_id: str
    visibility: str  # private | public
    display_name: str
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    emails: tuple[str, ...] = ()
    phone_numbers: tuple[PhoneNumber, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CvStatus:
    status: str  # one of STATUSES
    changed_at: datetime
    changed_by: str  # user | api | system
