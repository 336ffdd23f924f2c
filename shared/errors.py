"""Typed errors. Each carries a message an administrator can act on.

Messages never contain tokens, secrets or API keys: callers pass only
identifiers and codes into them.
"""

from __future__ import annotations

# Exit codes fixed in ARCHITECTURE.md.
EXIT_OK = 0
EXIT_ITEM_FAILURES = 1
EXIT_CONFIG = 2


class Nexxt365Error(Exception):
    """Base class; `str(err)` is the actionable message."""

    exit_code = EXIT_CONFIG


class ConfigError(Nexxt365Error):
    """A setting is missing or malformed; the message names it and a valid example."""


class GraphError(Nexxt365Error):
    """Microsoft Graph answered with an error that is not a configuration problem."""

    exit_code = EXIT_ITEM_FAILURES

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GraphAuthError(Nexxt365Error):
    """Token could not be obtained: wrong/expired secret, unknown tenant, app not in tenant."""

    def __init__(self, message: str, aadsts: str = "") -> None:
        super().__init__(message)
        self.aadsts = aadsts


class ConsentError(Nexxt365Error):
    """The app lacks an application permission (admin consent not granted)."""

    def __init__(self, message: str, permission: str = "") -> None:
        super().__init__(message)
        self.permission = permission


class DeltaExpired(GraphError):
    """The stored delta token is no longer valid: restart with a full round."""


class MailboxUnavailable(GraphError):
    """The user has no Exchange mailbox, or it is outside the app's mailbox scope."""

    def __init__(self, message: str, status: int = 0, code: str = "", out_of_scope: bool = False) -> None:
        super().__init__(message, status, code)
        self.out_of_scope = out_of_scope


class ClearVoxError(Nexxt365Error):
    """Base for ClearVox API errors; `code` is the API's error.code."""

    exit_code = EXIT_ITEM_FAILURES

    def __init__(self, message: str, status: int = 0, code: str = "", fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields or {}


class ClearVoxUnauthorized(ClearVoxError):
    """The API key is wrong or revoked."""

    exit_code = EXIT_CONFIG


class ClearVoxForbidden(ClearVoxError):
    """The key may not act on this account."""

    exit_code = EXIT_CONFIG


class LicenseRequired(ClearVoxError):
    """The account has no active Office 365 licence."""

    exit_code = EXIT_CONFIG


class ClearVoxNotFound(ClearVoxError):
    """The account, user or contact does not exist."""


class EmailTaken(ClearVoxError):
    """409: a user with this email already exists."""


class ValidationFailed(ClearVoxError):
    """422: field messages in `fields`."""


class ClearVoxUnavailable(ClearVoxError):
    """5xx or throttled after all retries: try again on the next run."""


class LeaseHeld(Nexxt365Error):
    """Another run of the same sync for the same tenant is in progress."""

    exit_code = EXIT_OK


class AccountNotFound(ClearVoxNotFound):
    """404 on the account itself: NEXXT365_CLEARVOX_ACCOUNT is wrong, unlike a missing user or contact."""

    exit_code = EXIT_CONFIG
