"""Specification of the contacts sync's pure part: mapping, hashing, plan, report.

Each test states one rule of the contacts issue; no I/O anywhere.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.clearvox import CvContact, PhoneNumber
from shared.graph.contacts import delta_start
from shared.sync.base import MassChangeRule
from shared.sync.contacts.cursors import FolderCursor, UserCursor, full_reconcile_due, load_cursors
from shared.sync.contacts.mapping import (
    MAX_DISPLAY_NAME,
    MAX_NAME,
    MAX_PHONES,
    REASON_NO_NUMBER,
    MapEntry,
    MappedContact,
    Skip,
    contact_hash,
    contactmap_from_rows,
    cv_fields,
    differing_fields,
    field_hashes,
    map_contact,
)
from shared.sync.contacts.read import GRAPH_SELECT
from shared.sync.contacts.render import plan_json, render_plan, summarize
from shared.sync.contacts.rules import (
    REASON_ABSENT,
    REASON_DELETED,
    REASON_FOLDER_REMOVED,
    REASON_NO_LONGER_QUALIFIES,
    REASON_PUBLIC_KEPT,
    ContactsOptions,
    ContactsPlan,
    Create,
    Delete,
    hold_key,
    index_synced,
    map_changes,
    plan_contacts,
    retained_plan,
)

OWNER = "cv-user-1"
FOLDER = "folder-contacts"


def graph_contact(gid: str = "g1", folder: str = FOLDER, **props: Any) -> dict[str, Any]:
    """A Graph contact as delta returns it; keyword arguments override or (with None) clear properties."""
    contact: dict[str, Any] = {
        "id": gid,
        "parentFolderId": folder,
        "displayName": "Jan Jansen",
        "givenName": "Jan",
        "surname": "Jansen",
        "companyName": "Jansen BV",
        "jobTitle": "Directeur",
        "emailAddresses": [{"name": "Jan", "address": "jan@jansen.nl"}],
        "businessPhones": ["020 123 4567"],
        "mobilePhone": None,
        "homePhones": [],
    }
    contact.update(props)
    return contact


def mapped(contact: dict[str, Any]) -> MappedContact:
    result = map_contact(contact)
    assert isinstance(result, MappedContact), result
    return result


def cv_contact(gid: str | None, cv_id: str | None = None, *, visibility: str = "private", owner: str = OWNER,
               source: dict[str, Any] | None = None, **fields: Any) -> CvContact:
    """A ClearVox contact; by default holding exactly what the connector wrote for `source`."""
    values = mapped(source or graph_contact(gid or "x")).fields()
    values.update(fields)
    return CvContact(id=cv_id or f"cv-{gid}", owner_user_id=owner, visibility=visibility, external_id=gid, **values)


def entry_for(contact: dict[str, Any], cv_id: str | None = None) -> MapEntry:
    """The contactmap row written after `contact` was synced."""
    m = mapped(contact)
    return MapEntry.for_contact(m, cv_id or f"cv-{m.graph_contact_id}", OWNER)


def synced_state(*contacts: dict[str, Any]) -> tuple[dict[str, MapEntry], dict[str, CvContact]]:
    """contactmap and ClearVox listing after the given contacts were synced unchanged."""
    cmap = {c["id"]: entry_for(c) for c in contacts}
    listing = {c["id"]: cv_contact(c["id"], source=c) for c in contacts}
    return cmap, listing


def action_ids(plan: ContactsPlan) -> set[str]:
    """Every ClearVox contact id the plan would write to or delete."""
    ids = {u.cv_contact_id for u in plan.updates} | {d.cv_contact_id for d in plan.deletes}
    if plan.hold:
        ids |= {d.cv_contact_id for d in plan.hold.deletes}
    return ids


# --------------------------------------------------------------------------- mapping


class TestMapping:
    def test_maps_every_field_and_normalises_numbers_to_e164(self) -> None:
        m = mapped(graph_contact(mobilePhone="06 12345678", homePhones=["+31 (0)30 234 5678"]))
        assert m.fields() == {
            "first_name": "Jan",
            "last_name": "Jansen",
            "display_name": "Jan Jansen",
            "company": "Jansen BV",
            "job_title": "Directeur",
            "emails": ("jan@jansen.nl",),
            "phone_numbers": (
                PhoneNumber("work", "+31201234567"),
                PhoneNumber("mobile", "+31612345678"),
                PhoneNumber("home", "+31302345678"),
            ),
        }
        assert m.graph_contact_id == "g1"
        assert m.folder_id == FOLDER
        assert m.warnings == ()

    def test_numbers_without_country_code_are_read_in_the_configured_region(self) -> None:
        m = map_contact(graph_contact(businessPhones=["02 227 39 11"]), region="BE")
        assert isinstance(m, MappedContact)
        assert m.phone_numbers == (PhoneNumber("work", "+3222273911"),)

    def test_create_body_carries_external_id_and_never_visibility(self) -> None:
        body = mapped(graph_contact()).create_fields()
        assert body["external_id"] == "g1"
        assert "visibility" not in body

    @pytest.mark.parametrize(
        ("props", "expected"),
        [
            ({}, "Jan Jansen"),
            ({"displayName": "  "}, "Jan Jansen"),
            ({"displayName": None, "middleName": "van der"}, "Jan van der Jansen"),
            ({"displayName": None, "givenName": None}, "Jansen"),
            ({"displayName": None, "givenName": None, "surname": None}, "Jansen BV"),
            ({"displayName": None, "givenName": None, "surname": None, "companyName": None}, "jan@jansen.nl"),
            ({"displayName": None, "givenName": None, "surname": None, "companyName": None, "emailAddresses": []},
             "+31201234567"),
        ],
    )
    def test_display_name_falls_back_to_names_then_company_then_email(self, props: dict[str, Any],
                                                                      expected: str) -> None:
        assert mapped(graph_contact(**props)).display_name == expected

    def test_empty_texts_become_none(self) -> None:
        m = mapped(graph_contact(givenName="", surname="  ", companyName=None, jobTitle=""))
        assert (m.first_name, m.last_name, m.company, m.job_title) == (None, None, None, None)

    def test_at_most_three_distinct_emails_and_no_exchange_internal_addresses(self) -> None:
        m = mapped(graph_contact(emailAddresses=[
            {"address": "a@x.nl"}, {"address": "A@X.NL"}, {"address": "/o=ExchangeLabs/ou=Exchange/cn=Recipients"},
            {"address": ""}, {"name": "no address"}, {"address": "b@x.nl"}, {"address": "c@x.nl"},
            {"address": "d@x.nl"},
        ]))
        assert m.emails == ("a@x.nl", "b@x.nl", "c@x.nl")

    def test_the_same_number_twice_collapses_to_one_keeping_the_first_type(self) -> None:
        m = mapped(graph_contact(businessPhones=["020 123 4567", "+31201234567"], mobilePhone="0031 20 1234567",
                                 homePhones=["020-1234567"]))
        assert m.phone_numbers == (PhoneNumber("work", "+31201234567"),)

    def test_an_unparseable_number_is_dropped_and_reported(self) -> None:
        m = mapped(graph_contact(businessPhones=["020 123 4567", "bel de receptie"], mobilePhone="123"))
        assert m.phone_numbers == (PhoneNumber("work", "+31201234567"),)
        assert len(m.warnings) == 2
        assert "bel de receptie" in m.warnings[0] and "'123'" in m.warnings[1]

    def test_a_contact_without_a_usable_number_is_skipped_with_a_reason(self) -> None:
        skip = map_contact(graph_contact(businessPhones=[], mobilePhone=None, homePhones=[]))
        assert skip == Skip("g1", REASON_NO_NUMBER, "Jan Jansen")

    def test_the_skip_reason_names_the_numbers_that_could_not_be_read(self) -> None:
        skip = map_contact(graph_contact(businessPhones=["n.v.t."]))
        assert isinstance(skip, Skip)
        assert skip.reason.startswith(REASON_NO_NUMBER) and "n.v.t." in skip.reason

    def test_texts_are_cut_to_the_contract_limits(self) -> None:
        m = mapped(graph_contact(displayName="D" * 250, givenName="G" * 150, surname="S" * 101,
                                 companyName="C" * 300, jobTitle="J" * 201))
        assert len(m.display_name) == MAX_DISPLAY_NAME
        assert len(m.first_name or "") == MAX_NAME and len(m.last_name or "") == MAX_NAME
        assert len(m.company or "") == 200 and len(m.job_title or "") == 200
        assert any("display name shortened" in w for w in m.warnings)

    def test_at_most_ten_phone_numbers(self) -> None:
        m = mapped(graph_contact(businessPhones=[f"020 123 45{i:02d}" for i in range(12)]))
        assert len(m.phone_numbers) == MAX_PHONES
        assert any("10 of 12" in w for w in m.warnings)


# --------------------------------------------------------------------------- hashing and contactmap rows


class TestHashAndRows:
    def test_hash_is_stable_across_key_order_and_containers(self) -> None:
        fields = mapped(graph_contact()).fields()
        reordered = dict(reversed(list(fields.items())))
        reordered["phone_numbers"] = list(reordered["phone_numbers"])
        assert contact_hash(fields) == contact_hash(reordered)
        assert contact_hash(fields) == contact_hash(mapped(graph_contact()).fields())

    def test_hash_changes_with_any_synced_field(self) -> None:
        base = mapped(graph_contact()).fields()
        for name, value in [("job_title", "CEO"), ("emails", ()), ("phone_numbers", (PhoneNumber("home", "+31201234567"),))]:
            assert contact_hash({**base, name: value}) != contact_hash(base), name

    def test_map_entry_round_trips_through_a_table_row_of_plain_strings(self) -> None:
        entry = entry_for(graph_contact())
        row = entry.to_row()
        assert all(isinstance(v, str | int | bool) for v in row.values())
        assert "g1" not in row.values()  # the Graph id is the RowKey
        back = MapEntry.from_row("g1", {**row, "PartitionKey": "t1", "RowKey": "g1", "Timestamp": "x"})
        assert back == entry

    def test_damaged_or_old_rows_still_load(self) -> None:
        entry = MapEntry.from_row("g1", {"cv_contact_id": "cv-1", "folder_id": "f", "hash": "h",
                                         "field_hashes": "not json"})
        assert entry.field_hashes == {} and entry.owner_cv_user_id == ""
        rows = {"g1": {"cv_contact_id": "cv-1"}, "g2": {"cv_contact_id": ""}}
        assert list(contactmap_from_rows(rows)) == ["g1"]


# --------------------------------------------------------------------------- creating without duplicates


class TestCreate:
    def test_a_new_outlook_contact_becomes_a_private_contact_of_the_user(self) -> None:
        plan = plan_contacts(OWNER, [graph_contact()], contactmap={}, cv_synced={})
        assert [c.graph_contact_id for c in plan.creates] == ["g1"]
        create = plan.creates[0]
        assert create.owner_cv_user_id == OWNER and not create.reconcile
        body = create.contact.create_fields()
        assert body["external_id"] == "g1" and "visibility" not in body

    def test_without_a_clearvox_listing_a_create_must_first_look_up_the_external_id(self) -> None:
        plan = plan_contacts(OWNER, [graph_contact()], contactmap={}, cv_synced=None)
        assert plan.creates[0].reconcile
        assert plan.needs_cv_index

    def test_lost_contactmap_reconciles_by_external_id_instead_of_creating(self) -> None:
        _, listing = synced_state(graph_contact("g1"), graph_contact("g2", displayName="Piet"))
        plan = plan_contacts(OWNER, [graph_contact("g1"), graph_contact("g2", displayName="Piet")],
                             contactmap={}, cv_synced=listing, complete=True)
        assert plan.creates == [] and plan.updates == [] and plan.deletes == []
        assert sorted(plan.reconciled) == ["g1", "g2"]
        assert plan.map_upserts["g1"].cv_contact_id == "cv-g1"  # the contactmap is rebuilt

    def test_a_create_that_finds_its_contact_at_apply_time_patches_the_difference_instead(self) -> None:
        plan = plan_contacts(OWNER, [graph_contact()], contactmap={}, cv_synced=None)
        fields = plan.creates[0].contact.fields()
        assert differing_fields(fields, cv_fields(cv_contact("g1", job_title="Stagiair"))) == {"job_title": "Directeur"}
        assert differing_fields(fields, cv_fields(cv_contact("g1"))) == {}

    def test_synced_contacts_missing_from_the_contactmap_are_pointed_out(self) -> None:
        # An incremental round cannot tell whether they are still in Outlook: the caller may read in full.
        _, listing = synced_state(graph_contact("g1"), graph_contact("g2"))
        plan = plan_contacts(OWNER, [], contactmap={}, cv_synced=listing)
        assert plan.is_noop and plan.unmapped_synced == ["g1", "g2"]

    def test_reconciling_patches_only_fields_that_differ_from_clearvox(self) -> None:
        listing = {"g1": cv_contact("g1", job_title="Stagiair")}
        plan = plan_contacts(OWNER, [graph_contact("g1")], contactmap={}, cv_synced=listing)
        assert plan.creates == []
        [update] = plan.updates
        assert update.cv_contact_id == "cv-g1"
        assert update.changes == {"job_title": "Directeur"}
        assert update.before == {"job_title": "Stagiair"}

    def test_after_a_crash_between_create_and_contactmap_write_the_next_run_does_not_create_again(self) -> None:
        contact = graph_contact()
        first = plan_contacts(OWNER, [contact], contactmap={}, cv_synced={})
        assert len(first.creates) == 1
        # The create succeeded, the run died before its contactmap row was written; delta repeats the round.
        listing = {"g1": cv_contact("g1", "cv-new", source=contact)}
        again = plan_contacts(OWNER, [contact], contactmap={}, cv_synced=listing)
        assert again.creates == [] and again.updates == []
        assert again.map_upserts["g1"].cv_contact_id == "cv-new"

    def test_a_contact_deleted_in_clearvox_is_created_again_when_it_changes_in_outlook(self) -> None:
        cmap = {"g1": entry_for(graph_contact())}
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap, cv_synced={})
        assert [c.graph_contact_id for c in plan.creates] == ["g1"] and plan.updates == []

    def test_the_last_version_of_a_contact_in_a_round_counts(self) -> None:
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="A"), graph_contact(jobTitle="B")], cv_synced={})
        assert [c.contact.job_title for c in plan.creates] == ["B"]

    def test_contacts_without_a_number_are_skipped_and_reported(self) -> None:
        plan = plan_contacts(OWNER, [graph_contact(businessPhones=[])], cv_synced={})
        assert plan.creates == []
        assert summarize([plan])["skipped"] == [{"id": "g1", "reason": f"{REASON_NO_NUMBER} (Jan Jansen)"}]

    def test_dropped_numbers_are_reported_as_warnings(self) -> None:
        plan = plan_contacts(OWNER, [graph_contact(mobilePhone="onbekend")], cv_synced={})
        assert len(plan.creates) == 1
        [warning] = summarize([plan])["warnings"]
        assert warning["id"] == "g1" and "onbekend" in warning["reason"]


# --------------------------------------------------------------------------- updating only what changed


class TestUpdate:
    def test_an_unchanged_contact_is_not_written(self) -> None:
        contact = graph_contact()
        cmap, listing = synced_state(contact)
        for cv_synced in (listing, None):
            plan = plan_contacts(OWNER, [contact], contactmap=cmap, cv_synced=cv_synced)
            assert plan.is_noop, plan
            assert plan.unchanged == ["g1"]

    def test_only_fields_changed_in_outlook_are_patched(self) -> None:
        cmap = {"g1": entry_for(graph_contact())}
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO", mobilePhone="06 12345678")], contactmap=cmap)
        [update] = plan.updates
        assert update.cv_contact_id == "cv-g1"
        assert set(update.changes) == {"job_title", "phone_numbers"}
        assert update.before is None  # not listed: nothing to show as the old value

    def test_an_edit_made_in_clearvox_is_left_alone_until_the_field_changes_in_outlook(self) -> None:
        contact = graph_contact()
        cmap = {"g1": entry_for(contact)}
        listing = {"g1": cv_contact("g1", source=contact, display_name="Jan (accountant)")}
        assert plan_contacts(OWNER, [contact], contactmap=cmap, cv_synced=listing).is_noop
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap, cv_synced=listing)
        [update] = plan.updates
        assert update.changes == {"job_title": "CEO"}
        assert update.before == {"job_title": "Directeur"}

    def test_updates_never_send_visibility_or_external_id(self) -> None:
        cmap = {"g1": replace(entry_for(graph_contact()), field_hashes={})}  # nothing known: write all
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap)
        [update] = plan.updates
        assert "visibility" not in update.changes and "external_id" not in update.changes

    def test_a_public_contact_is_still_updated_and_stays_public(self) -> None:
        contact = graph_contact()
        cmap = {"g1": entry_for(contact)}
        listing = {"g1": cv_contact("g1", source=contact, visibility="public")}
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap, cv_synced=listing)
        assert plan.updates[0].changes == {"job_title": "CEO"}

    def test_a_contact_moved_to_another_folder_is_not_deleted(self) -> None:
        contact = graph_contact()
        cmap, listing = synced_state(contact)
        moved = graph_contact(folder="folder-work")
        plan = plan_contacts(OWNER, [moved], removed_ids={"g1": FOLDER}, contactmap=cmap, cv_synced=listing)
        assert plan.deletes == [] and plan.updates == []
        assert plan.map_upserts["g1"].folder_id == "folder-work"

    def test_a_late_removal_from_the_folder_a_contact_already_left_is_ignored(self) -> None:
        contact = graph_contact(folder="folder-work")
        cmap, listing = synced_state(contact)
        plan = plan_contacts(OWNER, [], removed_ids={"g1": FOLDER}, contactmap=cmap, cv_synced=listing)
        assert plan.is_noop

    def test_a_contact_that_lost_its_last_number_is_removed(self) -> None:
        cmap, listing = synced_state(graph_contact())
        plan = plan_contacts(OWNER, [graph_contact(businessPhones=[])], contactmap=cmap, cv_synced=listing)
        assert [(d.cv_contact_id, d.reason) for d in plan.deletes] == [("cv-g1", REASON_NO_LONGER_QUALIFIES)]


# --------------------------------------------------------------------------- deleting


class TestDelete:
    def test_a_contact_deleted_in_outlook_is_deleted_in_clearvox(self) -> None:
        cmap, listing = synced_state(graph_contact("g1"), graph_contact("g2"))
        plan = plan_contacts(OWNER, [], removed_ids=["g1"], contactmap=cmap, cv_synced=listing)
        assert plan.deletes == [Delete("cv-g1", "g1", REASON_DELETED, "Jan Jansen")]
        assert map_changes(plan).deletes == ["g1"]

    def test_removed_entries_inside_the_changes_count_as_removals(self) -> None:
        cmap, listing = synced_state(graph_contact("g1"))
        removed = {"id": "g1", "@removed": {"reason": "deleted"}}
        plan = plan_contacts(OWNER, [removed], contactmap=cmap, cv_synced=listing)
        assert [d.cv_contact_id for d in plan.deletes] == ["cv-g1"]

    def test_a_contact_the_user_made_public_is_kept_and_reported(self) -> None:
        contact = graph_contact()
        cmap = {"g1": entry_for(contact)}
        listing = {"g1": cv_contact("g1", source=contact, visibility="public")}
        plan = plan_contacts(OWNER, [], removed_ids=["g1"], contactmap=cmap, cv_synced=listing)
        assert plan.deletes == []
        [kept] = plan.kept_public
        assert kept.cv_contact_id == "cv-g1"
        summary = summarize([plan])
        assert summary["kept_public"] == 1
        assert summary["skipped"][0]["id"] == "g1"
        assert summary["skipped"][0]["reason"].startswith(REASON_PUBLIC_KEPT)
        assert map_changes(plan).deletes == ["g1"]  # no longer synced from Outlook

    def test_without_a_clearvox_listing_a_delete_checks_visibility_first(self) -> None:
        cmap = {"g1": entry_for(graph_contact())}
        plan = plan_contacts(OWNER, [], removed_ids=["g1"], contactmap=cmap, cv_synced=None)
        assert plan.deletes == [Delete("cv-g1", "g1", REASON_DELETED, verify=True)]
        assert plan.needs_cv_index

    def test_a_removal_of_a_contact_never_synced_does_nothing(self) -> None:
        plan = plan_contacts(OWNER, [], removed_ids=["never-synced"], contactmap={}, cv_synced={})
        assert plan.is_noop

    def test_a_removal_of_a_contact_already_gone_from_clearvox_only_forgets_the_row(self) -> None:
        cmap = {"g1": entry_for(graph_contact())}
        plan = plan_contacts(OWNER, [], removed_ids=["g1"], contactmap=cmap, cv_synced={})
        assert plan.deletes == [] and plan.map_deletes == ["g1"]

    def test_a_removed_folder_deletes_all_its_contacts_and_nothing_else(self) -> None:
        cmap, listing = synced_state(graph_contact("g1", folder="f-old"), graph_contact("g2", folder="f-old"),
                                     graph_contact("g3"))
        plan = plan_contacts(OWNER, [], removed_folder_ids={"f-old"}, contactmap=cmap, cv_synced=listing)
        assert sorted((d.cv_contact_id, d.reason) for d in plan.deletes) == [
            ("cv-g1", REASON_FOLDER_REMOVED), ("cv-g2", REASON_FOLDER_REMOVED)]

    def test_a_full_round_deletes_what_is_no_longer_in_outlook(self) -> None:
        contacts = [graph_contact("g1"), graph_contact("g2"), graph_contact("g3")]
        cmap, listing = synced_state(*contacts)
        del cmap["g3"]  # known only from ClearVox (its row was lost)
        plan = plan_contacts(OWNER, contacts[:1], contactmap=cmap, cv_synced=listing, complete=True)
        assert sorted((d.cv_contact_id, d.reason) for d in plan.deletes) == [
            ("cv-g2", REASON_ABSENT), ("cv-g3", REASON_ABSENT)]

    def test_a_full_round_of_one_folder_only_deletes_within_that_folder(self) -> None:
        cmap, listing = synced_state(graph_contact("g1", folder="f1"), graph_contact("g2", folder="f2"))
        plan = plan_contacts(OWNER, [], contactmap=cmap, cv_synced=listing, complete_folder_ids={"f1"})
        assert [d.cv_contact_id for d in plan.deletes] == ["cv-g1"]

    def test_an_incremental_round_deletes_nothing_that_was_not_removed(self) -> None:
        cmap, listing = synced_state(graph_contact("g1"), graph_contact("g2"))
        assert plan_contacts(OWNER, [], contactmap=cmap, cv_synced=listing).is_noop


# --------------------------------------------------------------------------- contacts that are not ours


class TestNotOurs:
    PEOPLES = CvContact(id="cv-manual", owner_user_id=OWNER, visibility="private", display_name="Pizzeria",
                        external_id=None, phone_numbers=(PhoneNumber("work", "+31201111111"),))

    def test_contacts_without_external_id_never_reach_the_plan(self) -> None:
        listing, duplicates = index_synced([self.PEOPLES, cv_contact("g1")])
        assert list(listing) == ["g1"] and duplicates == []

    def test_contacts_without_external_id_are_never_updated_or_deleted(self) -> None:
        cmap, listing = synced_state(graph_contact("g1"))
        listing["bogus"] = self.PEOPLES  # even if handed in by mistake
        plan = plan_contacts(OWNER, [], contactmap=cmap, cv_synced=listing, complete=True)
        assert "cv-manual" not in action_ids(plan)
        assert action_ids(plan) == {"cv-g1"}

    def test_a_row_pointing_at_a_contact_that_lost_its_external_id_is_not_followed(self) -> None:
        # Someone cleared the external_id in ClearVox: that contact is theirs now.
        cmap = {"g1": entry_for(graph_contact(), cv_id="cv-manual")}
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap, cv_synced={})
        assert "cv-manual" not in action_ids(plan)
        plan = plan_contacts(OWNER, [], removed_ids=["g1"], contactmap=cmap, cv_synced={})
        assert "cv-manual" not in action_ids(plan)

    def test_contacts_of_other_users_are_ignored(self) -> None:
        cmap = {"g1": replace(entry_for(graph_contact()), owner_cv_user_id="cv-user-2")}
        listing = {"g1": cv_contact("g1", owner="cv-user-2")}
        plan = plan_contacts(OWNER, [], removed_ids=["g1"], contactmap=cmap, cv_synced=listing)
        assert plan.is_noop


# --------------------------------------------------------------------------- duplicates


class TestDuplicates:
    def test_the_mapped_contact_is_kept_and_private_duplicates_are_deleted(self) -> None:
        contact = graph_contact()
        cmap = {"g1": entry_for(contact, cv_id="cv-b")}
        listing, dups = index_synced([cv_contact("g1", "cv-a"), cv_contact("g1", "cv-b"),
                                      cv_contact("g1", "cv-c", visibility="public")], cmap)
        assert listing["g1"].id == "cv-b"
        plan = plan_contacts(OWNER, [contact], contactmap=cmap, cv_synced=listing, duplicates=dups)
        assert [(d.cv_contact_id, d.duplicate) for d in plan.deletes] == [("cv-a", True)]
        assert [k.cv_contact_id for k in plan.kept_public] == ["cv-c"]
        assert "g1" not in map_changes(plan).deletes  # the row still points at the keeper

    def test_without_a_contactmap_row_a_public_one_is_kept_before_the_lowest_id(self) -> None:
        listing, dups = index_synced([cv_contact("g1", "cv-a"), cv_contact("g1", "cv-b", visibility="public")])
        assert listing["g1"].id == "cv-b" and [d.id for d in dups] == ["cv-a"]


# --------------------------------------------------------------------------- the deletion hold


def many(n: int) -> list[dict[str, Any]]:
    return [graph_contact(f"g{i:02d}") for i in range(n)]


class TestHold:
    """The one guard (shared.sync.base.hold_reason) with rules.DELETIONS, per owner."""

    def test_deleting_more_than_half_is_held_and_the_rest_goes_on(self) -> None:
        cmap, listing = synced_state(*many(20))
        removed = [f"g{i:02d}" for i in range(11)]
        new = graph_contact("g-new")
        plan = plan_contacts(OWNER, [new], removed_ids=removed, contactmap=cmap, cv_synced=listing)
        assert plan.deletes == []
        assert plan.hold is not None and plan.hold.count == 11 and plan.hold.synced == 20
        assert plan.hold.key == hold_key(OWNER, removed)
        assert [c.graph_contact_id for c in plan.creates] == ["g-new"]  # the rest keeps going
        summary = summarize([plan])
        assert summary["held"] == 11 and summary["deleted"] == 0
        assert any(s["id"] == OWNER and "--confirm-deletions" in s["reason"] for s in summary["skipped"])
        assert not set(removed) & set(map_changes(plan).deletes)  # rows stay for the next run

    @pytest.mark.parametrize(("synced", "removed"), [(20, 10), (30, 15), (100, 50), (5, 2), (3, 1)])
    def test_half_or_less_goes_through(self, synced: int, removed: int) -> None:
        cmap, listing = synced_state(*many(synced))
        ids = [f"g{i:02d}" for i in range(removed)]
        plan = plan_contacts(OWNER, [], removed_ids=ids, contactmap=cmap, cv_synced=listing)
        assert plan.hold is None and len(plan.deletes) == removed

    @pytest.mark.parametrize(("synced", "removed"), [(10, 10), (8, 6), (4, 3)])
    def test_a_user_with_ten_or_fewer_contacts_is_held_too(self, synced: int, removed: int) -> None:
        cmap, listing = synced_state(*many(synced))
        plan = plan_contacts(OWNER, [], removed_ids=[f"g{i:02d}" for i in range(removed)], contactmap=cmap,
                             cv_synced=listing)
        assert plan.hold is not None and plan.deletes == []

    def test_more_than_the_limit_in_one_run_is_held_whatever_the_share(self) -> None:
        cmap, listing = synced_state(*many(20))
        rule = MassChangeRule("deletions", limit=5)
        plan = plan_contacts(OWNER, [], removed_ids=[f"g{i:02d}" for i in range(6)], contactmap=cmap,
                             cv_synced=listing, options=ContactsOptions(deletions=rule))
        assert plan.hold is not None and "exceed the limit of 5" in plan.hold.reason()

    def test_the_same_deletions_on_the_next_run_are_held_again(self) -> None:
        cmap, listing = synced_state(*many(20))
        removed = [f"g{i:02d}" for i in range(15)]
        first = plan_contacts(OWNER, [], removed_ids=removed, contactmap=cmap, cv_synced=listing)
        second = plan_contacts(OWNER, [], removed_ids=list(reversed(removed)), contactmap=cmap, cv_synced=listing)
        assert first.hold is not None and second.hold is not None and second.deletes == []
        assert second.hold.key == first.hold.key

    def test_deletions_outlook_no_longer_reports_are_not_planned(self) -> None:
        cmap, listing = synced_state(*many(20))
        assert plan_contacts(OWNER, [], removed_ids=[f"g{i:02d}" for i in range(15)], contactmap=cmap,
                             cv_synced=listing).hold is not None
        after = plan_contacts(OWNER, [], contactmap=cmap, cv_synced=listing)
        assert after.hold is None and after.deletes == []

    def test_confirm_deletions_lets_it_through(self) -> None:
        cmap, listing = synced_state(*many(20))
        plan = plan_contacts(OWNER, [], removed_ids=[f"g{i:02d}" for i in range(20)], contactmap=cmap,
                             cv_synced=listing, options=ContactsOptions(confirm_deletions=True))
        assert plan.hold is None and len(plan.deletes) == 20 and plan.released_hold is not None

    def test_a_vanished_mailbox_seen_as_a_full_round_is_held(self) -> None:
        cmap, listing = synced_state(*many(30))
        plan = plan_contacts(OWNER, [], contactmap=cmap, cv_synced=listing, complete=True)
        assert plan.hold is not None and plan.hold.count == 30 and plan.deletes == []

    def test_the_hold_is_per_user_and_its_key_too(self) -> None:
        assert hold_key("cv-user-1", ["g1"]) != hold_key("cv-user-2", ["g1"])
        assert hold_key(OWNER, ["g1", "g2"]) == hold_key(OWNER, ["g2", "g1"])


# --------------------------------------------------------------------------- users no longer synced


def test_an_unlinked_user_keeps_the_synced_contacts_and_it_is_reported() -> None:
    cmap, _ = synced_state(*many(3))
    plan = retained_plan(OWNER, cmap, "user unlinked")
    assert plan.is_noop
    summary = summarize([plan])
    assert summary["retained"] == 3 and summary["deleted"] == 0
    assert summary["skipped"] == [{"id": OWNER, "reason": "user unlinked: 3 synced contacts kept"}]


# --------------------------------------------------------------------------- after apply


class TestMapChanges:
    def test_rows_follow_what_was_applied(self) -> None:
        old = graph_contact("g-upd")
        cmap, listing = synced_state(old, graph_contact("g-del"), graph_contact("g-fail"))
        changes = [graph_contact("g-new"), graph_contact("g-upd", jobTitle="CEO"),
                   graph_contact("g-fail", jobTitle="CEO"), graph_contact("g-lost")]
        plan = plan_contacts(OWNER, changes, removed_ids=["g-del"], contactmap=cmap, cv_synced=listing)
        result = map_changes(plan, created={"g-new": "cv-new"}, failed={"g-fail"})
        assert set(result.upserts) == {"g-new", "g-upd"}  # g-lost failed to create: no row, retried next run
        assert result.upserts["g-new"].cv_contact_id == "cv-new"
        assert result.upserts["g-upd"].hash == contact_hash(mapped(graph_contact("g-upd", jobTitle="CEO")).fields())
        assert result.deletes == ["g-del"]
        assert result.rows()["g-new"] == result.upserts["g-new"].to_row()

    def test_a_failed_update_keeps_the_old_hash_so_the_next_run_tries_again(self) -> None:
        contact = graph_contact()
        cmap = {"g1": entry_for(contact)}
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap)
        assert "g1" not in map_changes(plan, failed={"g1"}).upserts
        again = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap)
        assert again.updates[0].changes == {"job_title": "CEO"}

    def test_an_update_that_had_to_write_the_contact_anew_points_the_row_at_the_new_contact(self) -> None:
        cmap = {"g1": entry_for(graph_contact())}
        plan = plan_contacts(OWNER, [graph_contact(jobTitle="CEO")], contactmap=cmap)
        row = map_changes(plan, created={"g1": "cv-new"}).upserts["g1"]
        assert row.cv_contact_id == "cv-new"
        assert row.hash == contact_hash(mapped(graph_contact(jobTitle="CEO")).fields())

    def test_stored_hashes_let_the_next_identical_round_do_nothing(self) -> None:
        contact = graph_contact()
        first = plan_contacts(OWNER, [contact], contactmap={}, cv_synced={})
        rows = map_changes(first, created={"g1": "cv-1"}).rows()
        cmap = contactmap_from_rows(rows)
        assert plan_contacts(OWNER, [contact], contactmap=cmap).is_noop


# --------------------------------------------------------------------------- report and dry-run


class TestReport:
    def plan(self) -> ContactsPlan:
        cmap, listing = synced_state(graph_contact("g-upd"), graph_contact("g-del"))
        return plan_contacts(
            OWNER,
            [graph_contact("g-new", mobilePhone="??"), graph_contact("g-upd", jobTitle="CEO"),
             graph_contact("g-skip", displayName="Geen Nummer", businessPhones=[])],
            removed_ids=["g-del"], contactmap=cmap, cv_synced=listing,
        )

    def test_summary_counts_match_the_run_report_shape(self) -> None:
        summary = summarize([self.plan()])
        assert json.loads(json.dumps(summary)) == summary
        assert {k: summary[k] for k in ("sync", "created", "updated", "deleted", "failed")} == {
            "sync": "contacts", "created": 1, "updated": 1, "deleted": 1, "failed": []}
        assert summary["skipped"] == [{"id": "g-skip", "reason": f"{REASON_NO_NUMBER} (Geen Nummer)"}]
        assert [w["id"] for w in summary["warnings"]] == ["g-new"]

    def test_summaries_of_several_users_add_up(self) -> None:
        summary = summarize([self.plan(), self.plan()])
        assert (summary["created"], summary["updated"], len(summary["skipped"])) == (2, 2, 2)

    def test_dry_run_text_names_every_action(self) -> None:
        text = render_plan(self.plan())
        assert text.splitlines()[0] == (f"contacts of ClearVox user {OWNER}: 1 to create, 1 to update, 1 to delete, "
                                        "0 unchanged, 0 public kept, 1 skipped")
        assert "+ create  Jan Jansen (+31201234567 work)" in text
        assert "~ update  Jan Jansen [cv-g-upd]: job_title: Directeur -> CEO" in text
        assert "- delete  Jan Jansen [cv-g-del]: deleted in Outlook" in text
        assert "! skip    Geen Nummer: no usable phone number" in text

    def test_the_json_plan_names_every_change_with_its_ids(self) -> None:
        doc = plan_json(self.plan())
        assert json.loads(json.dumps(doc)) == doc and doc["clearvox_user"] == OWNER
        assert [(c["graph_contact_id"], c["fields"]["phone_numbers"]) for c in doc["create"]] == [
            ("g-new", [{"type": "work", "number": "+31201234567"}])]
        assert doc["update"] == [{"graph_contact_id": "g-upd", "clearvox_contact_id": "cv-g-upd",
                                  "changes": {"job_title": {"before": "Directeur", "after": "CEO"}}}]
        assert [(d["graph_contact_id"], d["clearvox_contact_id"], d["reason"]) for d in doc["delete"]] == [
            ("g-del", "cv-g-del", REASON_DELETED)]
        assert doc["held"] == [] and doc["skipped"] == [{"id": "g-skip", "reason": f"{REASON_NO_NUMBER} (Geen Nummer)"}]

    def test_the_json_plan_lists_held_deletions(self) -> None:
        cmap, listing = synced_state(*many(20))
        plan = plan_contacts(OWNER, [], removed_ids=[f"g{i:02d}" for i in range(12)], contactmap=cmap,
                             cv_synced=listing)
        doc = plan_json(plan)
        assert doc["delete"] == [] and len(doc["held"]) == 12 and "--confirm-deletions" in doc["held_reason"]

    def test_dry_run_text_shows_a_hold(self) -> None:
        cmap, listing = synced_state(*many(20))
        plan = plan_contacts(OWNER, [], removed_ids=[f"g{i:02d}" for i in range(12)], contactmap=cmap,
                             cv_synced=listing)
        text = render_plan(plan)
        assert "! hold    deletion of 12 of 20 synced contacts held" in text
        assert text.count("held  ") == 12


def test_create_map_entry_records_owner_folder_and_hashes() -> None:
    plan = plan_contacts(OWNER, [graph_contact()], cv_synced={})
    create: Create = plan.creates[0]
    entry = create.map_entry("cv-9")
    assert (entry.cv_contact_id, entry.owner_cv_user_id, entry.folder_id) == ("cv-9", OWNER, FOLDER)
    assert entry.field_hashes == field_hashes(create.contact.fields())


# --------------------------------------------------------------------------- cursors and schedule


class TestCursors:
    def test_a_cursor_round_trips_through_its_table_rows(self) -> None:
        at = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        folder_id = "AAMkAGI2TG93AAA/+="  # opaque, with characters a row key may not hold
        cursor = UserCursor("oid-1", "cv-7", {folder_id: FolderCursor(folder_id, "Klanten", "https://graph/delta?x=1")},
                            full_at=at, hold="h", synced=12, retries=1)
        rows = cursor.rows()
        assert all("/" not in key for key in rows)
        assert load_cursors(rows) == {"oid-1": cursor}

    def test_folder_rows_of_users_without_a_user_row_are_ignored(self) -> None:
        rows = UserCursor("oid-1", "cv-7", {"f": FolderCursor("f")}).rows()
        del rows["oid-1"]
        assert load_cursors(rows) == {}

    def test_the_full_reconcile_is_due_after_full_sync_hours_spread_over_the_last_quarter(self) -> None:
        start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        oids = [f"user-{i}" for i in range(200)]
        assert all(full_reconcile_due(o, None, start, 24) for o in oids)
        assert not any(full_reconcile_due(o, start, start + timedelta(hours=17, minutes=59), 24) for o in oids)
        assert all(full_reconcile_due(o, start, start + timedelta(hours=24), 24) for o in oids)
        halfway = sum(full_reconcile_due(o, start, start + timedelta(hours=21), 24) for o in oids)
        assert 50 < halfway < 150  # spread, so users first synced together do not all come back in one run

    def test_delta_rounds_ask_only_for_the_mapped_properties(self) -> None:
        url = delta_start("oid-1", "AAMk=", GRAPH_SELECT)
        assert url.startswith("/users/oid-1/contactFolders/AAMk%3D/contacts/delta?$select=id,parentFolderId,")
        assert "homePhones" in url and "notes" not in url.lower()


def test_control_characters_in_outlook_names_never_reach_clearvox() -> None:
    mapped = map_contact({"id": "c1", "displayName": "\x1b]0;pwned\x07Piet\x00 Puk\r\n", "givenName": "Pi\x1b[2Jet",
                          "businessPhones": ["+31201234567"]})
    assert not isinstance(mapped, Skip)
    assert (mapped.display_name, mapped.first_name) == ("]0;pwnedPiet Puk", "Pi[2Jet")
