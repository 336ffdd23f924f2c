"""The users sync: Entra users with a valid email become ClearVox users, linked by Object-ID.

Modules: `rules` (eligibility, field values, the one email rule), `actions` and `plan` (the plan, pure),
`render` (dry-run text, the JSON plan, `--user` explanations), `source` (Graph rounds and the cache),
`lookup` (ClearVox reads of a delta round), `apply` (the writes), `ledger` (retries, recent
deactivations), `run` and `one_user` (one run), `linking` (`report unlinked`, `link --csv`).

The one outage rule (shared.sync.base.apply): a failed write fails that user only; it is reported,
kept in the retry ledger and tried again on the next runs (up to `retry_cap`, then by the full round),
and the run finishes the others and stores its deltaLink. A run stops writing only when ClearVox
cannot be reached at all, after 10 unavailable answers in a row, or on an AdminFix (key, licence,
account); its deltaLink then stays and the next run replays the round.

The one guard rule (shared.sync.base.hold_reason, `MassChangeRule("deactivations",
limit=NEXXT365_MAX_DEACTIVATIONS)`): a run's deactivations are all held when they exceed the limit in
one run or, with those of the last 24 hours, in a day, or when at least 3 would touch more than half of
the linked users (an empty or truncated full round). Held deactivations are released by
`--confirm-deactivations` or by Graph listing the users again, never by repetition. Users the connector
deactivated in the last 24 hours are looked up by id on every run and reactivated when Graph shows them.
"""

from datetime import timedelta

from shared.sync.base import SyncSpec, register
from shared.sync.users.run import run_users

SPEC = register(SyncSpec(
    name="users",
    function="sync_users",
    run=run_users,
    lease=timedelta(minutes=3),
    schedule_setting="NEXXT365_USERS_SCHEDULE",
    schedule_default="0 */15 * * * *",
    permissions=("User.Read.All",),
    extra_permissions=lambda options: {"GroupMember.Read.All": "NEXXT365_USERS_GROUP is set, which needs "
                                       "GroupMember.Read.All to read the group's members"} if options.users_group else {},
    retry_cap=10,
    budget=timedelta(minutes=25),
))
