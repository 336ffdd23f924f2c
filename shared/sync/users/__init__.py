"""The users sync: Entra users with a valid email become ClearVox users, linked by Object-ID."""

from datetime import timedelta

from shared.sync.base import SyncSpec, register
from shared.sync.users.run import run_users

SPEC = register(SyncSpec(
    name="users",
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
