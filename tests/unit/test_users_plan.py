"""The users sync plan, bullet by bullet of the users-sync issue. Pure: no HTTP, no storage."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.clearvox import USER_FIELDS, CvUser
from shared.errors import ConfigError
from shared.report import RunReport
from shared.settings import Options
from shared.sync.users.actions import Create, Deactivate, LinkAction, Skip, Update, UsersPlan
from shared.sync.users.plan import plan_users
from shared.sync.users.render import explain_user, plan_json, render_plan, report_plan
from shared.sync.users.rules import (
    GRAPH_SELECT,
    REASON_DISABLED,
    REASON_GUEST,
    REASON_NO_EMAIL,
    WHY_ABSENT,
    WHY_DELETED,
    WHY_DISABLED,
    WHY_LEFT_GROUP,
    Link,
    UsersOptions,
    awaiting_link,
    desired_fields,
    exists_reason,
    field_hashes,
    fields_hash,
    language,
    links_from_rows,
    names,
    split_display_name,
    valid_email,
)
from shared.sync.users.source import full_round_reason

OID_JAN = "11111111-1111-1111-1111-111111111111"
OID_PIET = "22222222-2222-2222-2222-222222222222"
OID_ANNA = "33333333-3333-3333-3333-333333333333"


def graph_user(oid: str = OID_JAN, **props: Any) -> dict[str, Any]:
    """A full Entra user as the users delta returns it with GRAPH_SELECT."""
    user: dict[str, Any] = {
        "id": oid,
        "displayName": "Jan de Vries",
        "givenName": "Jan",
        "surname": "de Vries",
        "mail": "jan@contoso.nl",
        "userPrincipalName": "jan@contoso.onmicrosoft.com",
        "businessPhones": ["020 123 4567"],
        "mobilePhone": "06 12345678",
        "jobTitle": "Sales",
        "department": "Verkoop",
        "preferredLanguage": "nl-NL",
        "accountEnabled": True,
        "userType": "Member",
    }
    user.update(props)
    return user


def cv_user(cv_id: str = "cv1", email: str = "jan@contoso.nl", ext: str | None = None, **props: Any) -> CvUser:
    values: dict[str, Any] = {"first_name": "Jan", "last_name": "de Vries", "display_name": "Jan de Vries"}
    values.update(props)
    return CvUser(id=cv_id, email=email, external_application_id=ext, **values)


def cv_mirror(user: dict[str, Any], cv_id: str = "cv1", **props: Any) -> CvUser:
    """The ClearVox user as the connector left it after writing `user` (linked)."""
    fields, _ = desired_fields(user)
    values: dict[str, Any] = {name: fields.get(name) for name in USER_FIELDS}
    values.update(language=fields.get("language", "nl"), external_application_id=user["id"])
    values.update(props)
    return CvUser(id=cv_id, **values)


def written(user: dict[str, Any], cv_id: str = "cv1", **props: Any) -> Link:
    """The links row after the connector wrote `user` to ClearVox user `cv_id`."""
    fields, _ = desired_fields(user)
    values: dict[str, Any] = {"object_id": user["id"], "cv_user_id": cv_id, "email": fields["email"],
                              "display_name": fields["display_name"], "status": "linked",
                              "field_hashes": field_hashes(fields)}
    values.update(props)
    return Link(**values)


def plan(
    users: list[dict[str, Any]],
    cv: list[CvUser] | None = None,
    links: list[Link] | None = None,
    removed: list[str] | None = None,
    full_round: bool = True,
    gone: list[str] | None = None,
    **options: Any,
) -> UsersPlan:
    return plan_users(users, removed or [], cv or [], {link.object_id: link for link in links or []},
                      UsersOptions(**options), full_round=full_round, gone_cv_ids=gone or [])


def skip_reasons(p: UsersPlan) -> dict[str, str]:
    return {s.id: s.reason for s in p.skips}


def no_writes(p: UsersPlan) -> bool:
    return not p.actions()


# --------------------------------------------------------------------------- source


def test_delta_select_asks_for_exactly_the_properties_of_the_issue() -> None:
    assert set(GRAPH_SELECT) == {
        "id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "businessPhones", "mobilePhone",
        "jobTitle", "department", "preferredLanguage", "accountEnabled", "userType",
    }


# --------------------------------------------------------------------------- eligibility


def test_enabled_member_with_mail_is_created() -> None:
    p = plan([graph_user()])
    assert [c.object_id for c in p.creates] == [OID_JAN]
    assert p.skips == []


@pytest.mark.parametrize("mail", [None, "", "   "])
def test_no_mail_is_skipped_even_with_a_user_principal_name(mail: str | None) -> None:
    p = plan([graph_user(mail=mail)])
    assert no_writes(p)
    assert skip_reasons(p) == {OID_JAN: REASON_NO_EMAIL}
    assert "no email in Entra contact info" in REASON_NO_EMAIL


def test_the_user_principal_name_is_never_used_as_email() -> None:
    p = plan([graph_user(mail="jan.devries@contoso.nl", userPrincipalName="jdv@contoso.onmicrosoft.com")])
    assert p.creates[0].fields["email"] == "jan.devries@contoso.nl"


def test_guest_is_not_created_by_default() -> None:
    p = plan([graph_user(userType="Guest")])
    assert no_writes(p)
    assert skip_reasons(p) == {OID_JAN: REASON_GUEST}


def test_guest_is_created_with_include_guests() -> None:
    assert len(plan([graph_user(userType="Guest")], include_guests=True).creates) == 1


def test_disabled_user_is_not_created_by_default() -> None:
    p = plan([graph_user(accountEnabled=False)])
    assert no_writes(p)
    assert skip_reasons(p) == {OID_JAN: REASON_DISABLED}


def test_disabled_user_is_created_with_include_disabled() -> None:
    assert len(plan([graph_user(accountEnabled=False)], include_disabled=True).creates) == 1


def test_invalid_mail_is_skipped_with_the_address_in_the_reason() -> None:
    p = plan([graph_user(mail="jan at contoso")])
    assert no_writes(p)
    assert skip_reasons(p)[OID_JAN] == "invalid email 'jan at contoso' in Entra contact info"


def test_missing_user_type_and_account_enabled_do_not_make_a_user_ineligible() -> None:
    user = graph_user()
    del user["userType"], user["accountEnabled"]
    assert len(plan([user]).creates) == 1


def test_every_ineligible_user_is_reported_with_its_reason() -> None:
    users = [graph_user("a", mail=None), graph_user("b", userType="Guest", mail="b@contoso.nl"),
             graph_user("c", accountEnabled=False, mail="c@contoso.nl"), graph_user("d", mail="d@@contoso.nl")]
    reasons = skip_reasons(plan(users))
    assert reasons["a"] == REASON_NO_EMAIL
    assert reasons["b"] == REASON_GUEST
    assert reasons["c"] == REASON_DISABLED
    assert reasons["d"].startswith("invalid email")


@pytest.mark.parametrize("mail", ["jan@contoso.nl", "Jan.de.Vries+tel@sub.contoso.co.uk", "a@b.io", "x@xn--p1ai.xn--p1ai"])
def test_valid_emails(mail: str) -> None:
    assert valid_email(mail) == mail


@pytest.mark.parametrize("mail", ["jan", "jan@", "@contoso.nl", "jan@contoso", "jan@@contoso.nl", "jan de@contoso.nl",
                                  ".jan@contoso.nl", "jan.@contoso.nl", "ja..n@contoso.nl", "jan@-contoso.nl",
                                  "jan@contoso.n", "a" * 65 + "@contoso.nl", "j@" + "a" * 250 + ".nl"])
def test_invalid_emails(mail: str) -> None:
    assert valid_email(mail) is None


# --------------------------------------------------------------------------- mapping


def test_fields_come_from_entra_in_clearvox_names_and_e164() -> None:
    fields, warnings = desired_fields(graph_user())
    assert fields == {
        "first_name": "Jan", "last_name": "de Vries", "display_name": "Jan de Vries", "email": "jan@contoso.nl",
        "phone_number": "+31201234567", "mobile_number": "+31612345678", "job_title": "Sales",
        "department": "Verkoop", "language": "nl",
    }
    assert warnings == []
    assert set(fields) <= set(USER_FIELDS)


def test_phone_without_country_code_is_read_in_the_default_region() -> None:
    fields, _ = desired_fields(graph_user(businessPhones=["02 511 22 33"], mobilePhone="0470 12 34 56"), "BE")
    assert fields["phone_number"] == "+3225112233"
    assert fields["mobile_number"] == "+32470123456"


def test_only_the_first_business_phone_is_used() -> None:
    fields, _ = desired_fields(graph_user(businessPhones=["+31 20 123 4567", "+31 10 765 4321"]))
    assert fields["phone_number"] == "+31201234567"


def test_empty_phones_and_texts_become_none_which_clears_them_in_clearvox() -> None:
    fields, _ = desired_fields(graph_user(businessPhones=[], mobilePhone=None, jobTitle="  ", department=None))
    assert fields["phone_number"] is None
    assert fields["mobile_number"] is None
    assert fields["job_title"] is None
    assert fields["department"] is None


def test_unparseable_phone_is_left_out_and_reported_as_a_warning() -> None:
    fields, warnings = desired_fields(graph_user(businessPhones=["call reception"], mobilePhone="06 12345678"))
    assert "phone_number" not in fields
    assert fields["mobile_number"] == "+31612345678"
    assert len(warnings) == 1
    assert warnings[0].startswith("phone_number left out")


def test_unparseable_phone_does_not_fail_the_user() -> None:
    p = plan([graph_user(mobilePhone="12")])
    assert len(p.creates) == 1
    assert "mobile_number" not in p.creates[0].payload()
    assert [(w.id, w.reason.split(":")[0]) for w in p.warnings] == [(OID_JAN, "mobile_number left out")]
    assert p.skips == []


@pytest.mark.parametrize(("preferred", "expected"), [
    ("nl-NL", "nl"), ("nl-BE", "nl"), ("en-US", "en"), ("en-GB", "en"), ("de-DE", "de"), ("fr-BE", "fr"),
    ("FR", "fr"), ("en_US", "en"), ("es-ES", None), ("", None), (None, None),
])
def test_language_from_preferred_language(preferred: str | None, expected: str | None) -> None:
    assert language(preferred) == expected


def test_unknown_language_is_left_out_so_clearvox_keeps_its_value_or_defaults_to_nl() -> None:
    fields, _ = desired_fields(graph_user(preferredLanguage="es-ES"))
    assert "language" not in fields
    p = plan([graph_user(preferredLanguage=None)])
    assert "language" not in p.creates[0].payload()


@pytest.mark.parametrize(("display", "expected"), [
    ("Jan de Vries", ("Jan", "de Vries")),
    ("Anna van der Berg", ("Anna", "van der Berg")),
    ("Vries, Jan de", ("Jan de", "Vries")),
    ("  Piet   Jansen ", ("Piet", "Jansen")),
    ("Receptie", ("Receptie", "")),
    ("", ("", "")),
])
def test_split_display_name(display: str, expected: tuple[str, str]) -> None:
    assert split_display_name(display) == expected


def test_names_prefer_given_name_and_surname() -> None:
    assert names(graph_user(displayName="J. de Vries (Sales)")) == ("Jan", "de Vries", "J. de Vries (Sales)")


def test_names_fall_back_to_splitting_the_display_name() -> None:
    assert names(graph_user(givenName=None, surname=None)) == ("Jan", "de Vries", "Jan de Vries")
    assert names(graph_user(givenName="Johannes", surname=None)) == ("Johannes", "de Vries", "Jan de Vries")
    assert names(graph_user(givenName=None, surname="Vries")) == ("Jan", "Vries", "Jan de Vries")


def test_one_word_name_fills_both_required_names() -> None:
    assert names(graph_user(givenName=None, surname=None, displayName="Receptie")) == ("Receptie", "Receptie",
                                                                                        "Receptie")


def test_no_name_at_all_uses_the_mail_local_part() -> None:
    user = graph_user(givenName=None, surname=None, displayName=None, mail="receptie@contoso.nl")
    assert names(user) == ("receptie", "receptie", "receptie")


def test_display_name_is_built_from_the_names_when_missing() -> None:
    assert names(graph_user(displayName=""))[2] == "Jan de Vries"


def test_values_longer_than_clearvox_allows_are_cut_with_a_warning() -> None:
    fields, warnings = desired_fields(graph_user(jobTitle="x" * 250))
    assert fields["job_title"] == "x" * 200
    assert warnings == ["job_title cut to 200 characters (ClearVox's maximum)"]


# --------------------------------------------------------------------------- hashing


def test_fields_hash_is_stable_and_independent_of_key_order() -> None:
    fields, _ = desired_fields(graph_user())
    reordered = dict(reversed(list(fields.items())))
    assert fields_hash(fields) == fields_hash(reordered)
    # Pinned: the hash is stored in the links table, so it must not change between releases.
    assert fields_hash({"email": "jan@contoso.nl", "job_title": None}) == "752b53a36f1dd6c6a2496a74d44b5cea"


def test_fields_hash_changes_with_a_value_but_not_with_email_case() -> None:
    fields, _ = desired_fields(graph_user())
    assert fields_hash(fields) != fields_hash({**fields, "job_title": "Inkoop"})
    assert fields_hash(fields) == fields_hash({**fields, "email": "JAN@Contoso.nl"})


def test_link_hash_equals_fields_hash_of_what_was_written() -> None:
    p = plan([graph_user()])
    create = p.creates[0]
    assert create.link.hash == fields_hash(create.fields)


# --------------------------------------------------------------------------- links table


def test_link_row_round_trips_through_table_storage_types() -> None:
    link = written(graph_user(), deactivated_by_connector=True, status="deactivated")
    row = link.to_row()
    assert all(isinstance(v, str | int | bool) for v in row.values())
    assert Link.from_row(link.object_id, row) == link
    assert row["hash"] == link.hash


def test_link_row_always_has_every_column_so_a_merge_never_keeps_a_stale_value() -> None:
    row = Link(OID_JAN, None, "jan@contoso.nl", "Jan", "conflict").to_row()
    assert row["cv_user_id"] == ""
    assert set(row) == {"cv_user_id", "email", "display_name", "status", "hash", "field_hashes",
                        "deactivated_by_connector"}
    assert Link.from_row(OID_JAN, row).cv_user_id is None


def test_damaged_link_row_reads_as_nothing_written_yet() -> None:
    link = Link.from_row(OID_JAN, {"cv_user_id": "cv1", "field_hashes": "{not json", "status": "weird"})
    assert link.field_hashes == {}
    assert link.status == "linked"
    assert Link.from_row(OID_JAN, {}).status == "unlinked"


def test_links_from_rows_keys_by_object_id() -> None:
    rows = {OID_JAN: written(graph_user()).to_row()}
    assert links_from_rows(rows)[OID_JAN].cv_user_id == "cv1"


# --------------------------------------------------------------------------- linked users


def test_linked_means_external_application_id_equals_the_object_id() -> None:
    user = graph_user(jobTitle="Inkoop")
    p = plan([user], cv=[cv_mirror(graph_user())], links=[written(graph_user())])
    assert [(u.cv_user_id, u.object_id) for u in p.updates] == [("cv1", OID_JAN)]
    assert p.creates == []


def test_linked_user_gets_only_the_changed_fields_with_old_values() -> None:
    before = graph_user()
    after = graph_user(jobTitle="Inkoop", mobilePhone="+31 6 87654321")
    p = plan([after], cv=[cv_mirror(before)], links=[written(before)])
    (update,) = p.updates
    assert update.payload() == {"mobile_number": "+31687654321", "job_title": "Inkoop"}
    assert update.before == {"mobile_number": "+31612345678", "job_title": "Sales"}
    assert update.link.hash == fields_hash(desired_fields(after)[0])


def test_every_field_the_issue_names_is_synced_for_a_linked_user() -> None:
    before = graph_user()
    after = graph_user(givenName="Johan", surname="Vries", displayName="Johan Vries", mail="johan@contoso.nl",
                       businessPhones=["010 765 4321"], mobilePhone="06 87654321", jobTitle="Inkoop",
                       department="Inkoop", preferredLanguage="en-GB")
    (update,) = plan([after], cv=[cv_mirror(before)], links=[written(before)]).updates
    assert set(update.changes) == set(USER_FIELDS)


def test_unchanged_linked_user_is_not_written() -> None:
    user = graph_user()
    p = plan([user], cv=[cv_mirror(user)], links=[written(user)])
    assert no_writes(p)
    assert p.rows == []
    assert p.unchanged == 1


def test_a_value_an_admin_typed_in_clearvox_survives_until_entra_changes_that_field() -> None:
    user = graph_user()
    edited = cv_mirror(user, job_title="Teamleider verkoop", mobile_number="+31699999999")
    p = plan([user], cv=[edited], links=[written(user)])
    assert no_writes(p)
    # Entra changes another field: only that one is sent, the admin's values stay.
    p = plan([graph_user(department="Marketing")], cv=[edited], links=[written(user)])
    assert p.updates[0].payload() == {"department": "Marketing"}
    # Entra changes the edited field itself: Entra wins.
    p = plan([graph_user(jobTitle="Manager")], cv=[edited], links=[written(user)])
    assert p.updates[0].payload() == {"job_title": "Manager"}


def test_entra_change_that_clearvox_already_has_is_not_sent_but_remembered() -> None:
    before = graph_user()
    after = graph_user(jobTitle="Inkoop")
    p = plan([after], cv=[cv_mirror(after)], links=[written(before)])
    assert no_writes(p)
    assert p.rows == [written(after)]


def test_email_that_differs_only_in_case_is_not_sent() -> None:
    user = graph_user(mail="Jan@Contoso.NL")
    p = plan([user], cv=[cv_mirror(graph_user())], links=[written(graph_user())])
    assert no_writes(p)


def test_cleared_field_in_entra_is_cleared_in_clearvox() -> None:
    before = graph_user()
    p = plan([graph_user(jobTitle=None)], cv=[cv_mirror(before)], links=[written(before)])
    assert p.updates[0].payload() == {"job_title": None}


def test_unknown_language_keeps_clearvox_language() -> None:
    before = graph_user()
    p = plan([graph_user(preferredLanguage="es-ES")], cv=[cv_mirror(before, language="de")], links=[written(before)])
    assert no_writes(p)


def test_unparseable_phone_on_a_linked_user_keeps_clearvox_value() -> None:
    before = graph_user()
    p = plan([graph_user(mobilePhone="ask reception")], cv=[cv_mirror(before)], links=[written(before)])
    assert no_writes(p)
    assert [w.reason.split(":")[0] for w in p.warnings] == ["mobile_number left out"]


def test_linked_email_change_to_an_address_another_clearvox_user_has_is_held_back() -> None:
    before = graph_user()
    after = graph_user(mail="sales@contoso.nl", jobTitle="Inkoop")
    other = cv_user("cv9", "SALES@contoso.nl")
    p = plan([after], cv=[cv_mirror(before), other], links=[written(before)])
    (update,) = p.updates
    assert update.payload() == {"job_title": "Inkoop"}
    assert "another ClearVox user has that email" in p.warnings[0].reason
    # The email is not recorded as written, so it is tried again on a later run.
    assert update.link.field_hashes["email"] == written(before).field_hashes["email"]
    assert update.link.email == "jan@contoso.nl"


def test_object_id_pasted_in_other_case_or_with_spaces_still_links() -> None:
    user = graph_user()
    cv = cv_mirror(user, external_application_id=f"  {OID_JAN.upper()} ")
    p = plan([user], cv=[cv], links=[written(user)])
    assert no_writes(p)
    assert p.unchanged == 1


def test_object_id_pasted_into_two_clearvox_users_is_a_conflict_and_neither_is_touched() -> None:
    user = graph_user(jobTitle="Inkoop")
    p = plan([user], cv=[cv_mirror(graph_user()), cv_mirror(graph_user(), cv_id="cv2", email="x@contoso.nl")],
             links=[written(graph_user())])
    assert no_writes(p)
    assert "several ClearVox users (cv1, cv2)" in skip_reasons(p)[OID_JAN]
    assert len(p.conflicts) == 1


# --------------------------------------------------------------------------- new users


def test_new_user_is_created_with_the_object_id_as_external_application_id() -> None:
    p = plan([graph_user()], cv=[cv_user("cv5", "someone@contoso.nl")])
    (create,) = p.creates
    payload = create.payload()
    assert payload["external_application_id"] == OID_JAN
    assert payload["email"] == "jan@contoso.nl"
    assert None not in payload.values()
    row = create.result_link("cv42")
    assert (row.object_id, row.cv_user_id, row.status) == (OID_JAN, "cv42", "linked")


def test_existing_email_is_not_created_nor_changed_and_reported_with_the_object_id() -> None:
    p = plan([graph_user()], cv=[cv_user("cv5", "JAN@CONTOSO.NL", job_title="Old")])
    assert no_writes(p)
    assert skip_reasons(p) == {OID_JAN: f"exists in ClearVox: paste Object-ID {OID_JAN} into Extern toepassing ID"}
    assert exists_reason(OID_JAN) == skip_reasons(p)[OID_JAN]
    (unlinked,) = p.unlinked
    assert (unlinked.cv_user_id, unlinked.email, unlinked.display_name, unlinked.object_id) == (
        "cv5", "JAN@CONTOSO.NL", "Jan de Vries", OID_JAN)


def test_unlinked_user_is_remembered_for_report_unlinked() -> None:
    p = plan([graph_user()], cv=[cv_user("cv5")])
    (row,) = p.rows
    assert (row.status, row.cv_user_id, row.display_name) == ("unlinked", "cv5", "Jan de Vries")
    assert awaiting_link({row.object_id: row}) == [OID_JAN]
    # Next run, still waiting: the same row is not written again.
    assert plan([graph_user()], cv=[cv_user("cv5")], links=[row]).rows == []


def test_auto_link_links_the_existing_user_and_sends_the_entra_values() -> None:
    p = plan([graph_user()], cv=[cv_user("cv5", job_title="Old")], auto_link=True)
    (action,) = p.link_actions
    assert action.set_external_id
    payload = action.payload()
    assert payload["external_application_id"] == OID_JAN
    assert payload["job_title"] == "Sales"
    assert "first_name" not in payload  # already equal
    assert action.link.status == "linked"
    assert p.unlinked == [] and p.skips == []


@pytest.mark.parametrize("auto_link", [False, True])
def test_clearvox_user_linked_to_another_object_id_is_never_taken_over(auto_link: bool) -> None:
    p = plan([graph_user()], cv=[cv_user("cv5", ext=OID_PIET)], auto_link=auto_link)
    assert no_writes(p)
    assert p.unlinked == []
    assert f"linked to another Object-ID ({OID_PIET})" in skip_reasons(p)[OID_JAN]
    assert p.conflicts[0].cv_user_id == "cv5"


def test_pasted_object_id_is_recognised_without_any_change_in_entra() -> None:
    user = graph_user()
    waiting = plan([user], cv=[cv_user("cv5", job_title="Old")]).rows[0]
    # The admin pastes the Object-ID; the apply layer passes the cached user and the ClearVox user.
    pasted = cv_user("cv5", ext=OID_JAN, job_title="Old")
    p = plan([user], cv=[pasted], links=[waiting], full_round=False)
    (action,) = p.link_actions
    assert not action.set_external_id
    assert action.payload()["job_title"] == "Sales"
    assert "external_application_id" not in action.payload()
    assert action.link.status == "linked"
    assert p.unlinked == [] and p.skips == []


def test_pasted_link_where_clearvox_already_matches_needs_no_request() -> None:
    user = graph_user()
    p = plan([user], cv=[cv_mirror(user)], links=[Link(OID_JAN, "cv1", "jan@contoso.nl", "Jan", "unlinked")])
    (action,) = p.link_actions
    assert action.payload() == {}
    assert action.link.hash == fields_hash(desired_fields(user)[0])


def test_clearvox_user_deleted_while_linked_is_created_again_with_a_note() -> None:
    p = plan([graph_user()], cv=[], links=[written(graph_user(), cv_id="cv-gone")])
    (create,) = p.creates
    assert "cv-gone" in create.note


def test_delta_round_never_creates_a_user_whose_linked_clearvox_user_was_not_looked_up() -> None:
    p = plan([graph_user(mail="new@contoso.nl")], cv=[], links=[written(graph_user())], full_round=False)
    assert no_writes(p)
    assert "next full round" in skip_reasons(p)[OID_JAN]


def test_delta_round_recreates_a_user_whose_linked_clearvox_user_was_looked_up_and_is_gone() -> None:
    p = plan([graph_user()], cv=[], links=[written(graph_user(), cv_id="cv-gone")], full_round=False, gone=["cv-gone"])
    (create,) = p.creates
    assert "cv-gone" in create.note


def test_delta_round_drops_the_row_of_a_removed_user_whose_clearvox_user_is_gone() -> None:
    _, _, row = linked_pair()
    p = plan([], cv=[], links=[row], removed=[OID_JAN], full_round=False, gone=["cv1"], on_removed="deactivate")
    assert no_writes(p) and p.stale == [OID_JAN]


def test_link_removed_by_an_admin_in_clearvox_falls_back_to_the_existing_email_rule() -> None:
    user = graph_user()
    p = plan([user], cv=[cv_mirror(user, external_application_id=None)], links=[written(user)])
    assert no_writes(p)
    assert p.unlinked[0].cv_user_id == "cv1"


# --------------------------------------------------------------------------- duplicates in Entra


def test_two_entra_users_with_the_same_mail_are_neither_created_and_both_reported() -> None:
    users = [graph_user(OID_JAN, mail="info@contoso.nl"), graph_user(OID_PIET, mail="INFO@contoso.nl")]
    p = plan(users)
    assert no_writes(p)
    assert set(skip_reasons(p)) == {OID_JAN, OID_PIET}
    assert all("conflict" in r for r in skip_reasons(p).values())
    (conflict,) = p.conflicts
    assert set(conflict.object_ids) == {OID_JAN, OID_PIET}
    assert {r.status for r in p.rows} == {"conflict"}


def test_duplicate_mail_is_remembered_across_delta_rounds() -> None:
    users = [graph_user(OID_JAN, mail="info@contoso.nl"), graph_user(OID_PIET, mail="info@contoso.nl")]
    rows = plan(users).rows
    # Only Piet changes (another property); Jan is not in this delta round.
    p = plan([graph_user(OID_PIET, mail="info@contoso.nl", jobTitle="Support")], links=rows, full_round=False)
    assert no_writes(p)
    assert set(p.conflicts[0].object_ids) == {OID_JAN, OID_PIET}


def test_resolved_duplicate_is_created() -> None:
    users = [graph_user(OID_JAN, mail="info@contoso.nl"), graph_user(OID_PIET, mail="info@contoso.nl")]
    rows = plan(users).rows
    p = plan([graph_user(OID_JAN, mail="jan@contoso.nl"), graph_user(OID_PIET, mail="info@contoso.nl")], links=rows)
    assert {c.object_id for c in p.creates} == {OID_JAN, OID_PIET}


def test_linked_user_keeps_syncing_when_a_new_user_gets_its_mail() -> None:
    jan = graph_user(OID_JAN)
    p = plan([graph_user(OID_JAN, jobTitle="Inkoop"), graph_user(OID_PIET, mail="jan@contoso.nl")],
             cv=[cv_mirror(jan)], links=[written(jan)])
    assert [u.object_id for u in p.updates] == [OID_JAN]
    assert p.creates == []
    assert OID_PIET in skip_reasons(p)
    assert set(p.conflicts[0].object_ids) == {OID_JAN, OID_PIET}


# --------------------------------------------------------------------------- removed and disabled


def linked_pair(oid: str = OID_JAN, n: int = 1) -> tuple[dict[str, Any], CvUser, Link]:
    user = graph_user(oid, mail=f"user{n}@contoso.nl")
    return user, cv_mirror(user, cv_id=f"cv{n}"), written(user, cv_id=f"cv{n}")


def test_removed_linked_user_is_only_reported_by_default() -> None:
    _, cv, row = linked_pair()
    p = plan([], cv=[cv], links=[row], removed=[OID_JAN], full_round=False)
    assert no_writes(p)
    assert skip_reasons(p)[OID_JAN] == f"{WHY_DELETED}; ClearVox user cv1 <user1@contoso.nl> left active (on_removed=report)"


def test_removed_linked_user_is_deactivated_never_deleted_with_on_removed_deactivate() -> None:
    _, cv, row = linked_pair()
    p = plan([], cv=[cv], links=[row], removed=[OID_JAN], full_round=False, on_removed="deactivate")
    (deactivate,) = p.deactivations
    assert deactivate.payload() == {"active": False}
    assert deactivate.reason == WHY_DELETED
    assert (deactivate.link.status, deactivate.link.deactivated_by_connector) == ("deactivated", True)
    assert all(isinstance(a, Create | Update | LinkAction | Deactivate) for a in p.actions())


def test_removed_entry_inside_the_delta_items_counts_as_removed() -> None:
    _, cv, row = linked_pair()
    gone = {"id": OID_JAN, "@removed": {"reason": "changed"}}
    p = plan([gone], cv=[cv], links=[row], full_round=False, on_removed="deactivate")
    assert [d.object_id for d in p.deactivations] == [OID_JAN]


def test_disabled_linked_user_is_treated_as_removed() -> None:
    user, cv, row = linked_pair()
    p = plan([{**user, "accountEnabled": False}], cv=[cv], links=[row], on_removed="deactivate")
    assert [(d.cv_user_id, d.reason) for d in p.deactivations] == [("cv1", WHY_DISABLED)]
    p = plan([{**user, "accountEnabled": False}], cv=[cv], links=[row])
    assert skip_reasons(p)[OID_JAN].startswith(WHY_DISABLED)
    assert no_writes(p)


def test_disabled_linked_user_is_synced_normally_with_include_disabled() -> None:
    user, cv, row = linked_pair()
    p = plan([{**user, "accountEnabled": False, "jobTitle": "Inkoop"}], cv=[cv], links=[row],
             on_removed="deactivate", include_disabled=True)
    assert p.deactivations == []
    assert p.updates[0].payload() == {"job_title": "Inkoop"}


def test_removed_user_that_was_never_linked_needs_nothing_and_its_waiting_row_goes() -> None:
    waiting = Link(OID_JAN, "cv5", "jan@contoso.nl", "Jan", "unlinked")
    p = plan([], cv=[cv_user("cv5")], links=[waiting], removed=[OID_JAN], full_round=False, on_removed="deactivate")
    assert no_writes(p)
    assert p.skips == []
    assert p.stale == [OID_JAN]


def test_full_round_counts_linked_users_absent_from_the_round_as_removed() -> None:
    _, cv, row = linked_pair()
    p = plan([], cv=[cv], links=[row], on_removed="deactivate")
    assert [(d.object_id, d.reason) for d in p.deactivations] == [(OID_JAN, WHY_ABSENT)]


def test_delta_round_does_not_treat_absent_users_as_removed() -> None:
    _, cv, row = linked_pair()
    p = plan([], cv=[cv], links=[row], on_removed="deactivate", full_round=False)
    assert no_writes(p)
    assert p.skips == []


def test_pasted_object_id_matching_no_entra_user_is_reported_not_deactivated() -> None:
    typo = cv_user("cv7", "kees@contoso.nl", ext="11111111-1111-1111-1111-11111111111x")
    p = plan([], cv=[typo], on_removed="deactivate")
    assert no_writes(p)
    assert "matches no Entra user" in skip_reasons(p)["cv7"]


def test_removed_user_whose_linked_clearvox_user_was_not_looked_up_is_deactivated_by_its_row() -> None:
    _, _, row = linked_pair()
    p = plan([], cv=[], links=[row], removed=[OID_JAN], full_round=False, on_removed="deactivate")
    assert [d.cv_user_id for d in p.deactivations] == ["cv1"]


def test_full_round_drops_the_row_of_a_linked_user_gone_from_both_sides() -> None:
    _, _, row = linked_pair()
    p = plan([], cv=[], links=[row], on_removed="deactivate")
    assert no_writes(p)
    assert p.stale == [OID_JAN]


def test_user_both_changed_and_removed_in_one_round_counts_as_present() -> None:
    user, cv, row = linked_pair()
    p = plan([user], cv=[cv], links=[row], removed=[OID_JAN], on_removed="deactivate", full_round=False)
    assert p.deactivations == []
    assert p.unchanged == 1


def test_already_deactivated_user_is_not_deactivated_again() -> None:
    _, cv, row = linked_pair()
    done = replace(row, status="deactivated", deactivated_by_connector=True)
    p = plan([], cv=[replace(cv, active=False)], links=[done], removed=[OID_JAN], on_removed="deactivate")
    assert no_writes(p)
    # Even when an admin made it active again in ClearVox: that choice stands.
    p = plan([], cv=[cv], links=[done], removed=[OID_JAN], on_removed="deactivate")
    assert no_writes(p)


def test_user_an_admin_deactivated_in_clearvox_is_marked_but_not_owned_by_the_connector() -> None:
    _, cv, row = linked_pair()
    p = plan([], cv=[replace(cv, active=False)], links=[row], removed=[OID_JAN], on_removed="deactivate")
    assert no_writes(p)
    (marked,) = p.rows
    assert (marked.status, marked.deactivated_by_connector) == ("deactivated", False)


def test_more_deactivations_than_the_maximum_deactivates_none_and_reports_them_held() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(11)]
    p = plan([], cv=[c for _, c, _ in pairs], links=[r for _, _, r in pairs], on_removed="deactivate")
    assert p.deactivations == []
    assert len(p.held) == 11
    assert p.actions() == []
    assert all("held: 11 deactivations in one run exceed the limit of 10" in r and "--confirm-deactivations" in r
               for r in skip_reasons(p).values())
    assert len(p.skips) == 11


def test_deactivations_up_to_the_maximum_and_half_of_the_linked_users_go_through() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(30)]
    p = plan([u for u, _, _ in pairs[10:]], cv=[c for _, c, _ in pairs], links=[r for _, _, r in pairs],
             on_removed="deactivate")
    assert len(p.deactivations) == 10 and p.held == []


def test_an_empty_full_round_holds_the_deactivation_of_even_a_few_linked_users() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(8)]
    p = plan([], cv=[c for _, c, _ in pairs], links=[r for _, _, r in pairs], on_removed="deactivate")
    assert p.actions() == [] and len(p.held) == 8
    assert p.held_reason == "8 deactivations would touch 8 of 8 known (100%)"


def test_two_of_eight_linked_users_absent_are_deactivated_but_three_of_four_are_held() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(8)]
    p = plan([u for u, _, _ in pairs[2:]], cv=[c for _, c, _ in pairs], links=[r for _, _, r in pairs],
             on_removed="deactivate")
    assert len(p.deactivations) == 2 and p.held == []
    p = plan([pairs[0][0]], cv=[c for _, c, _ in pairs[:4]], links=[r for _, _, r in pairs[:4]],
             on_removed="deactivate")
    assert p.deactivations == [] and len(p.held) == 3


def test_deactivations_past_the_rolling_day_cap_are_held() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(40)]
    links = [r for _, _, r in pairs]
    removed = [f"oid-{n:02d}" for n in range(3)]
    assert len(plan([], cv=[c for _, c, _ in pairs], links=links, removed=removed, full_round=False,
                    on_removed="deactivate", deactivated_today=7).deactivations) == 3
    held = plan([], cv=[c for _, c, _ in pairs], links=links, removed=removed, full_round=False,
                on_removed="deactivate", deactivated_today=8)
    assert held.deactivations == [] and held.held_reason == (
        "3 deactivations after 8 in the last 24 hours exceed the limit of 10 a day")
    confirmed = plan([], cv=[c for _, c, _ in pairs], links=links, removed=removed, full_round=False,
                     on_removed="deactivate", deactivated_today=8, confirm_deactivations=True)
    assert len(confirmed.deactivations) == 3


def test_confirm_deactivations_lets_a_large_batch_through() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(25)]
    p = plan([], cv=[c for _, c, _ in pairs], links=[r for _, _, r in pairs], on_removed="deactivate",
             confirm_deactivations=True)
    assert len(p.deactivations) == 25 and p.held == []


def test_an_empty_full_round_is_caught_by_the_deactivation_limit() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(50)]
    p = plan([], cv=[c for _, c, _ in pairs], links=[r for _, _, r in pairs], on_removed="deactivate")
    assert p.actions() == [] and len(p.held) == 50


def test_re_enabled_user_the_connector_deactivated_is_reactivated() -> None:
    user, cv, row = linked_pair()
    done = replace(row, status="deactivated", deactivated_by_connector=True)
    p = plan([user], cv=[replace(cv, active=False)], links=[done], on_removed="deactivate")
    (update,) = p.updates
    assert update.payload() == {"active": True}
    assert update.reactivates
    assert (update.link.status, update.link.deactivated_by_connector) == ("linked", False)


def test_user_an_admin_deactivated_in_clearvox_is_not_reactivated() -> None:
    user, cv, row = linked_pair()
    p = plan([user], cv=[replace(cv, active=False)], links=[row])
    assert no_writes(p)
    marked = replace(row, status="deactivated", deactivated_by_connector=False)
    p = plan([user], cv=[replace(cv, active=False)], links=[marked])
    assert no_writes(p)
    assert p.rows[0].status == "linked"


def test_deactivate_then_reactivate_round_trip() -> None:
    user, cv, row = linked_pair()
    (deactivate,) = plan([], cv=[cv], links=[row], removed=[OID_JAN], on_removed="deactivate",
                         full_round=False).deactivations
    after = deactivate.result_link("cv1")
    (update,) = plan([user], cv=[replace(cv, active=False)], links=[after], full_round=False).updates
    assert update.payload() == {"active": True}


def test_linked_user_that_became_ineligible_is_reported_and_left_as_is() -> None:
    user, cv, row = linked_pair()
    p = plan([{**user, "mail": None, "jobTitle": "Inkoop"}], cv=[cv], links=[row], on_removed="deactivate")
    assert no_writes(p)
    assert skip_reasons(p)[OID_JAN] == f"{REASON_NO_EMAIL}; linked ClearVox user cv1 is not updated"
    assert p.stale == [] and p.rows == []


def test_user_waiting_for_a_link_that_became_ineligible_leaves_the_unlinked_report() -> None:
    waiting = Link(OID_JAN, "cv5", "jan@contoso.nl", "Jan", "unlinked")
    p = plan([graph_user(userType="Guest")], cv=[cv_user("cv5")], links=[waiting], full_round=False)
    assert p.stale == [OID_JAN]


def test_full_round_cleans_rows_of_users_entra_no_longer_lists() -> None:
    waiting = Link(OID_PIET, "cv5", "piet@contoso.nl", "Piet", "unlinked")
    conflict = Link("dup-1", None, "info@contoso.nl", "Info", "conflict")
    _, cv, row = linked_pair(OID_JAN, 1)
    kept = replace(row, status="deactivated", deactivated_by_connector=True)
    _, _, gone_row = linked_pair(OID_ANNA, 3)
    gone = replace(gone_row, status="deactivated", deactivated_by_connector=True)
    p = plan([], cv=[replace(cv, active=False), cv_user("cv5", "piet@contoso.nl")],
             links=[waiting, conflict, kept, gone], on_removed="deactivate")
    assert no_writes(p)
    # The deactivated user keeps its row (so a restore in Entra reactivates it); rows of vanished users go.
    assert p.stale == sorted([OID_PIET, "dup-1", OID_ANNA])


def test_delta_round_keeps_rows_of_users_not_in_the_round() -> None:
    waiting = Link(OID_PIET, "cv5", "piet@contoso.nl", "Piet", "unlinked")
    p = plan([graph_user()], cv=[cv_user("cv9", "x@contoso.nl")], links=[waiting], full_round=False)
    assert p.stale == []


def test_items_without_an_id_are_ignored() -> None:
    p = plan([{"displayName": "no id", "mail": "x@contoso.nl"}])
    assert no_writes(p) and p.skips == []


# --------------------------------------------------------------------------- users group scope


def test_only_members_of_the_users_group_are_synced() -> None:
    users = [graph_user(OID_JAN), graph_user(OID_PIET, mail="piet@contoso.nl")]
    p = plan(users, users_group_members=frozenset({OID_JAN.upper()}))
    assert [c.object_id for c in p.creates] == [OID_JAN]
    assert p.out_of_scope == 1
    assert p.skips == []


def test_linked_user_leaving_the_users_group_is_treated_as_removed() -> None:
    user, cv, row = linked_pair()
    p = plan([user], cv=[cv], links=[row], users_group_members=frozenset(), on_removed="deactivate",
             full_round=False)
    assert [(d.object_id, d.reason) for d in p.deactivations] == [(OID_JAN, WHY_LEFT_GROUP)]


def test_pasted_user_outside_the_group_that_the_connector_never_linked_is_left_alone() -> None:
    user = graph_user()
    p = plan([user], cv=[cv_mirror(user)], users_group_members=frozenset(), on_removed="deactivate")
    assert no_writes(p)
    assert p.out_of_scope == 1


# --------------------------------------------------------------------------- purity and apply-friendliness


def test_plan_does_not_change_its_inputs() -> None:
    user, cv, row = linked_pair()
    users = [{**user, "jobTitle": "Inkoop"}, graph_user(OID_PIET, mail="piet@contoso.nl")]
    links = {OID_JAN: row}
    snapshot = copy.deepcopy((users, links))
    plan_users(users, [OID_ANNA], [cv], links, UsersOptions(on_removed="deactivate"), full_round=True)
    assert (users, links) == snapshot


def test_same_input_gives_the_same_plan() -> None:
    user, cv, row = linked_pair()
    users = [{**user, "jobTitle": "Inkoop"}, graph_user(OID_PIET, mail="piet@contoso.nl")]
    first = plan_users(users, [], [cv], {OID_JAN: row}, UsersOptions(), full_round=True)
    assert first == plan_users(users, [], [cv], {OID_JAN: row}, UsersOptions(), full_round=True)


def test_each_object_id_gets_at_most_one_action_so_apply_is_a_flat_loop() -> None:
    jan, cv_jan, row_jan = linked_pair(OID_JAN, 1)
    _, cv_anna, row_anna = linked_pair(OID_ANNA, 3)
    p = plan([{**jan, "jobTitle": "Inkoop"}, graph_user(OID_PIET, mail="piet@contoso.nl")], cv=[cv_jan, cv_anna],
             links=[row_jan, row_anna], removed=[OID_ANNA], on_removed="deactivate")
    ids = [a.object_id for a in p.actions()]
    assert sorted(ids) == sorted({OID_JAN, OID_PIET, OID_ANNA})
    for action in p.actions():
        assert action.result_link("cvX").object_id == action.object_id
        assert action.payload()


# --------------------------------------------------------------------------- --dry-run and --json


def sample_plan() -> UsersPlan:
    jan, cv_jan, row_jan = linked_pair(OID_JAN, 1)
    _, cv_anna, row_anna = linked_pair(OID_ANNA, 3)
    users = [
        {**jan, "jobTitle": "Inkoop"},
        graph_user(OID_PIET, mail="piet@contoso.nl", mobilePhone="bel receptie"),
        graph_user("guest-1", userType="Guest", mail="ext@partner.nl"),
        graph_user("exists-1", mail="kees@contoso.nl"),
        graph_user("auto-1", mail="auto@contoso.nl"),
    ]
    cv = [cv_jan, cv_anna, cv_user("cv8", "kees@contoso.nl")]
    return plan(users, cv=cv, links=[row_jan, row_anna], removed=[OID_ANNA], on_removed="deactivate",
                full_round=False)


def test_dry_run_text_lists_every_kind_of_decision() -> None:
    text = render_plan(sample_plan())
    assert text.startswith("Users plan (changes since the last run): 2 to create, 1 to update, 0 to link, "
                           "1 to deactivate")
    assert "Create:" in text and f"Object-ID {OID_PIET}" in text
    assert 'job_title: "Sales" -> "Inkoop"' in text
    assert f"  - ClearVox user cv3 <user3@contoso.nl>  Object-ID {OID_ANNA}: {WHY_DELETED}" in text
    assert f"guest-1: {REASON_GUEST}" in text
    assert "ClearVox user cv8  kees@contoso.nl  Jan de Vries  Object-ID exists-1" in text
    assert "Warnings:" in text and "mobile_number left out" in text


def test_dry_run_text_shows_links_and_held_deactivations() -> None:
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(11)]
    p = plan([graph_user(OID_PIET, mail="kees@contoso.nl")], cv=[cv_user("cv8", "kees@contoso.nl"),
             *[c for _, c, _ in pairs]], links=[r for _, _, r in pairs], on_removed="deactivate", auto_link=True)
    text = render_plan(p)
    assert "0 to deactivate (11 held)" in text
    assert "Deactivations held" in text and "oid-10" in text
    assert f"  = ClearVox user cv8 <kees@contoso.nl> <- Object-ID {OID_PIET} (set Extern toepassing ID)" in text
    assert '      first_name: "Jan" -> "Jan"' not in text


def test_dry_run_text_shows_reactivation_and_recreation_notes() -> None:
    user, cv, row = linked_pair()
    done = replace(row, status="deactivated", deactivated_by_connector=True)
    text = render_plan(plan([user], cv=[replace(cv, active=False)], links=[done]))
    assert "active: false -> true" in text
    text = render_plan(plan([graph_user()], links=[written(graph_user(), cv_id="cv-gone")]))
    assert "note: ClearVox user cv-gone it was linked to no longer exists" in text


def test_empty_plan_renders_one_line() -> None:
    assert render_plan(UsersPlan(full_round=True)).count("\n") == 1


def test_json_follows_the_report_shape_and_its_plan_names_every_change_by_object_id() -> None:
    p = sample_plan()
    report = RunReport("users", "t1", dry_run=True)
    report_plan(report, p, dry_run=True)
    out = json.loads(json.dumps(report.to_json()))
    assert (out["created"], out["updated"], out["linked"], out["deactivated"]) == (2, 1, 0, 1)
    assert out["failed"] == []
    assert {"id": "guest-1", "reason": REASON_GUEST} in [{"id": s["id"], "reason": s["reason"]} for s in out["skipped"]]
    assert out["unlinked"] == [{"cv_user_id": "cv8", "email": "kees@contoso.nl", "display_name": "Jan de Vries",
                                "object_id": "exists-1"}]
    plan_doc = out["plan"]
    assert plan_doc["update"] == [{"object_id": OID_JAN, "cv_user_id": "cv1",
                                   "changes": {"job_title": {"before": "Sales", "after": "Inkoop"}}}]
    assert plan_doc["deactivate"] == [{"object_id": OID_ANNA, "cv_user_id": "cv3", "email": "user3@contoso.nl",
                                       "reason": WHY_DELETED}]
    assert {c["object_id"] for c in plan_doc["create"]} == {OID_PIET, "auto-1"}
    assert all(c["fields"]["email"] for c in plan_doc["create"])
    assert plan_doc["link"] == [] and plan_doc["reactivate"] == [] and plan_doc["held"] == []


def test_json_plan_lists_links_reactivations_and_held_deactivations() -> None:
    user, cv, row = linked_pair()
    done = replace(row, status="deactivated", deactivated_by_connector=True)
    back = plan_json(plan([user], cv=[replace(cv, active=False)], links=[done]))
    assert back["reactivate"] == [{"object_id": OID_JAN, "cv_user_id": "cv1",
                                   "changes": {"active": {"before": False, "after": True}}}]
    assert back["update"] == []
    pairs = [linked_pair(f"oid-{n:02d}", n) for n in range(11)]
    held = plan_json(plan([graph_user(OID_PIET, mail="kees@contoso.nl")], cv=[cv_user("cv8", "kees@contoso.nl"),
                     *[c for _, c, _ in pairs]], links=[r for _, _, r in pairs], on_removed="deactivate",
                     auto_link=True))
    assert held["deactivate"] == [] and len(held["held"]) == 11
    assert all(h["object_id"].startswith("oid-") and "exceed the limit" in h["held"] for h in held["held"])
    assert held["link"][0]["object_id"] == OID_PIET and held["link"][0]["set_external_id"] is True


# --------------------------------------------------------------------------- options


def test_options_reject_unknown_on_removed() -> None:
    with pytest.raises(ConfigError):
        UsersOptions(on_removed="delete")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        UsersOptions(max_deactivations=-1)


def test_options_from_settings() -> None:
    settings = Options(auto_link=True, on_removed="deactivate", max_deactivations=3, include_guests=True,
                       default_region="BE")
    options = UsersOptions.from_settings(settings, users_group_members=[OID_JAN.upper()], confirm_deactivations=True)
    assert options == UsersOptions(include_guests=True, auto_link=True, on_removed="deactivate", max_deactivations=3,
                                   confirm_deactivations=True, default_region="BE",
                                   users_group_members=frozenset({OID_JAN}))
    assert UsersOptions.from_settings(Options()).users_group_members is None


# --------------------------------------------------------------------------- rounds and --user explanations


NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def cursor(**extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"delta_link": "https://graph/v1.0/users/delta?$deltatoken=x", "group": "",
                           "select": ",".join(GRAPH_SELECT), "full_at": NOW - timedelta(hours=1)}
    row.update(extra)
    return row


@pytest.mark.parametrize(("row", "options", "reason"), [
    (None, Options(), "first run"),
    (cursor(delta_link=""), Options(), "first run"),
    (cursor(full_at=NOW - timedelta(hours=24)), Options(), "full reconcile (every 24 hours)"),
    (cursor(full_at=NOW - timedelta(hours=3)), Options(full_sync_hours=2), "full reconcile (every 2 hours)"),
    (cursor(full_at=None), Options(), "no full round recorded"),
    (cursor(), Options(users_group="0f0f0f0f-0000-0000-0000-000000000000"), "the users group setting changed"),
    (cursor(select="id,mail"), Options(), "the selected properties changed"),
    (cursor(), Options(), ""),
])
def test_a_full_round_is_due_for_a_reason_or_the_delta_link_is_used(
        row: dict[str, Any] | None, options: Options, reason: str) -> None:
    assert full_round_reason(row, options, NOW) == reason


def explain(users: list[dict[str, Any]], oid: str = OID_JAN, cv: list[CvUser] | None = None,
            links: list[Link] | None = None, removed: list[str] | None = None, **options: Any) -> str:
    rows = {link.object_id: link for link in links or []}
    p = plan_users(users, removed or [], cv or [], rows, UsersOptions(**options), full_round=False)
    user = next((u for u in users if u["id"] == oid), None)
    return "\n".join(explain_user(user, oid, p, cv or [], rows, UsersOptions(**options)))


def test_explain_a_new_user_lists_the_fields_it_is_created_with() -> None:
    text = explain([graph_user()])
    assert "Eligible: yes" in text and "ClearVox: no user has this Object-ID or this email" in text
    assert "Decision: create a ClearVox user" in text and '  email: "jan@contoso.nl"' in text


def test_explain_an_ineligible_user_says_why() -> None:
    assert "Eligible: no - guest user" in explain([graph_user(userType="Guest")])
    assert "Eligible: no - no email in Entra contact info" in explain([graph_user(mail=None)])


def test_explain_a_user_matched_by_email_says_what_to_paste() -> None:
    text = explain([graph_user()], cv=[cv_user("cv9")])
    assert "ClearVox: matched by email - user cv9 <jan@contoso.nl> has this email and no Object-ID" in text
    assert f"Decision: skip - {exists_reason(OID_JAN)}" in text


def test_explain_a_linked_user_shows_the_fields_that_changed() -> None:
    user, cv, row = linked_pair()
    changed = {**user, "jobTitle": "Directeur"}
    text = explain([changed], cv=[cv], links=[row])
    assert "ClearVox: linked - user cv1" in text and "Links table: linked, ClearVox user cv1" in text
    assert 'Decision: update ClearVox user cv1; fields changed:\n  job_title: "Sales" -> "Directeur"' in text
    assert "no field changed" in explain([user], cv=[cv], links=[row])


def test_explain_a_user_outside_the_users_group() -> None:
    text = explain([graph_user()], users_group_members=frozenset({OID_PIET}))
    assert "Users group: not a member" in text and "Decision: nothing to do - not in the users group" in text


def test_explain_a_deleted_user_known_from_the_links_table() -> None:
    _, cv, row = linked_pair()
    text = explain([], cv=[cv], links=[row], removed=[OID_JAN], on_removed="deactivate")
    assert f"Entra: no user with Object-ID {OID_JAN} (deleted)" in text
    assert "Decision: deactivate ClearVox user cv1 (deleted in Entra); it is never deleted" in text


# --------------------------------------------------------------------------- control characters (issue 10, point 9)


def test_control_characters_are_stripped_from_what_is_sent_and_compared_without_them() -> None:
    user = graph_user(displayName="Jan\x1b]0;owned\x07 de Vries", givenName="Jan\x00", surname="de\nVries",
                      jobTitle="Sales\x1b[2J")
    fields, _ = desired_fields(user)
    assert (fields["first_name"], fields["last_name"], fields["display_name"], fields["job_title"]) == (
        "Jan", "de Vries", "Jan]0;owned de Vries", "Sales[2J")
    # ClearVox holding the stripped value (or the raw one) is no change: no endless updates.
    cv = cv_user(first_name="Jan", last_name="de Vries", display_name="Jan]0;owned de Vries", job_title="Sales\x1b[2J",
                 phone_number="+31201234567", mobile_number="+31612345678", department="Verkoop", language="nl")
    unknown = replace(written(user, cv_id="cv1"), field_hashes={})  # nothing recorded: every field is compared
    p = plan([user], cv=[replace(cv, external_application_id=OID_JAN)], links=[unknown])
    assert no_writes(p) and p.unchanged == 1


def test_the_dry_run_text_and_the_user_explanation_escape_control_characters() -> None:
    p = UsersPlan(full_round=False, skips=[Skip(OID_JAN, "odd name Jan\x1b[2J\x07\nde Vries")])
    text = render_plan(p)
    assert "\x1b" not in text and "\x07" not in text and "Jan\\x1b[2J\\x07\\nde Vries" in text
    user = graph_user(displayName="Jan\x1b]0;owned\x07", mail="jan@contoso.nl")
    lines = explain_user(user, OID_JAN, plan([user]), [], {}, UsersOptions())
    assert lines[0].startswith("Entra: Jan\\x1b]0;owned\\x07 <jan@contoso.nl>")
    assert not any("\x1b" in line or "\x07" in line for line in lines)


def test_valid_email_is_the_one_rule_and_returns_the_trimmed_address() -> None:
    assert valid_email(" jan@contoso.nl ") == "jan@contoso.nl"
    assert valid_email("a@b") is None and valid_email("@@") is None and valid_email(None) is None
