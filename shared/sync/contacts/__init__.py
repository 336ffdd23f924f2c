"""The contacts sync: each linked user's personal Outlook contacts become private ClearVox contacts,
and the contacts of the shared mailboxes in NEXXT365_COMPANY_CONTACTS the company phone book."""

from datetime import timedelta

from shared.sync.base import SyncSpec, register
from shared.sync.contacts.company import company_mailbox_checks
from shared.sync.contacts.run import run_contacts

SPEC = register(SyncSpec(
    name="contacts",
    function="sync_contacts",
    run=run_contacts,
    lease=timedelta(minutes=3),
    schedule_setting="NEXXT365_CONTACTS_SCHEDULE",
    schedule_default="0 */30 * * * *",
    permissions=("Contacts.Read",),
    retry_cap=10,
    budget=timedelta(minutes=25),
    doctor=company_mailbox_checks,
))
