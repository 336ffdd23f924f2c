"""Typed errors, classed by what the caller must do.

Every error the connector raises is one of three kinds (as singer_sdk's
Fatal/Retriable/Ignorable errors):

- `AdminFix`: an administrator must change something (a setting, a secret,
  consent, a licence). The run stops, exits 2, and the tenant is backed off.
- `Transient`: the service is down or throttled; the run stops (or the item
  waits) and the next run tries again. Exit 1.
- `ItemError`: this item only (one user, contact or mailbox). The item is
  failed and retried later; the run goes on with the others.

`GraphError` and `ClearVoxError` say where an error came from (status, code);
each concrete class also carries exactly one of the three kinds, so callers
write `except ItemError` / `except Transient` / `except AdminFix` instead of
listing classes. Messages never contain tokens, secrets or API keys: callers
pass only identifiers and codes into them.
"""

from __future__ import annotations

# Exit codes fixed in ARCHITECTURE.md.
EXIT_OK = 0
EXIT_ITEM_FAILURES = 1
EXIT_CONFIG = 2
EXIT_NOT_RUN = 3


class Nexxt365Error(Exception):
    """Base class; `str(err)` is the actionable message."""

    exit_code = EXIT_CONFIG


# -- what the caller must do ------------------------------------------------------

class AdminFix(Nexxt365Error):
    """An administrator must fix something; retrying before that only repeats the failure."""

    exit_code = EXIT_CONFIG


class Transient(Nexxt365Error):
    """The service is unavailable or throttled: try again later."""

    exit_code = EXIT_ITEM_FAILURES


class ItemError(Nexxt365Error):
    """Concerns one item only: fail it, keep it for a retry, go on with the others."""

    exit_code = EXIT_ITEM_FAILURES


# -- configuration and the run itself -----------------------------------------------

class ConfigError(AdminFix):
    """A setting is missing or malformed; the message names it and a valid example."""


class LeaseHeld(Nexxt365Error):
    """Another run of the same sync for the same tenant holds the lease: not run (exit 3)."""

    exit_code = EXIT_NOT_RUN


class LeaseLost(Transient):
    """This run could not renew its lease (another run may have taken over): it stops writing."""


# -- Microsoft Graph ---------------------------------------------------------------

class GraphError(Nexxt365Error):
    """Microsoft Graph answered with an error; `status` and `code` are Graph's. Concrete kinds below."""

    exit_code = EXIT_ITEM_FAILURES

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GraphUnavailable(GraphError, Transient):
    """Graph unreachable, 5xx or throttled after the retries, or an answer Graph should not give: next run."""


class DeltaExpired(GraphError, Transient):
    """The stored delta token is no longer valid: restart with a full round."""


class MailboxUnavailable(GraphError, ItemError):
    """The user has no Exchange mailbox, or it is outside the app's mailbox scope."""

    def __init__(self, message: str, status: int = 0, code: str = "", out_of_scope: bool = False) -> None:
        super().__init__(message, status, code)
        self.out_of_scope = out_of_scope


class GraphItemError(GraphError, ItemError):
    """Graph refused or garbled the answer for one item (one user, folder or mailbox)."""


class GraphAuthError(AdminFix):
    """Token could not be obtained: wrong/expired secret, unknown tenant, app not in tenant."""

    def __init__(self, message: str, aadsts: str = "") -> None:
        super().__init__(message)
        self.aadsts = aadsts


class ConsentError(AdminFix):
    """The app lacks an application permission (admin consent not granted)."""

    def __init__(self, message: str, permission: str = "") -> None:
        super().__init__(message)
        self.permission = permission


# -- ClearVox Nexxt ----------------------------------------------------------------

class ClearVoxError(Nexxt365Error):
    """Base for ClearVox API errors; `code` is the API's error.code. Concrete kinds below."""

    exit_code = EXIT_ITEM_FAILURES

    def __init__(self, message: str, status: int = 0, code: str = "", fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields or {}


class ClearVoxUnauthorized(ClearVoxError, AdminFix):
    """The API key is wrong or revoked."""

    exit_code = EXIT_CONFIG


class ClearVoxForbidden(ClearVoxError, AdminFix):
    """The key may not act on this account."""

    exit_code = EXIT_CONFIG


class LicenseRequired(ClearVoxError, AdminFix):
    """The account has no active Office 365 licence."""

    exit_code = EXIT_CONFIG


class AccountNotFound(ClearVoxError, AdminFix):
    """404 on the account itself: NEXXT365_CLEARVOX_ACCOUNT is wrong, unlike a missing user or contact."""

    exit_code = EXIT_CONFIG


class ClearVoxMisdirected(ClearVoxError, AdminFix):
    """The PBX answered with a redirect: NEXXT365_CLEARVOX_URL is not its own address (never followed)."""

    exit_code = EXIT_CONFIG


class ClearVoxUnavailable(ClearVoxError, Transient):
    """Unreachable, 5xx or throttled after the retries allowed for the request: try again later.

    `outage` is True when the PBX could not be reached at all (refused, TLS): every
    further request would fail the same way, so the applier stops at once.
    """

    @property
    def outage(self) -> bool:
        return self.code in ("unreachable", "tls")


class ClearVoxNotFound(ClearVoxError, ItemError):
    """The user or contact does not exist."""


class EmailTaken(ClearVoxError, ItemError):
    """409: a user with this email already exists."""


class ValidationFailed(ClearVoxError, ItemError):
    """422: field messages in `fields`."""


class ClearVoxRejected(ClearVoxError, ItemError):
    """An unexpected answer for one request (an unknown 4xx, or a 2xx without the data the contract promises)."""
