"""The syncs. Importing this package registers every sync (shared/sync/base.py: `syncs()`).

Adding a sync: a package here that registers its `SyncSpec`, an import below,
a function folder at the top of the repository and its infra settings.
"""

from shared.sync import calendar, contacts, users

__all__ = ["calendar", "contacts", "users"]
