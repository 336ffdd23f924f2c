"""Stored hashes stay readable: the values below were written by the previous release's code."""

from __future__ import annotations

from shared.clearvox import PhoneNumber
from shared.sync.contacts.mapping import contact_hash, field_hashes
from shared.sync.contacts.rules import hold_key
from shared.sync.users.rules import field_hashes as user_field_hashes
from shared.sync.users.rules import fields_hash

USER = {"first_name": "Jürgen", "last_name": "Bakker", "email": "J.Bakker@Example.NL", "phone_number": "+31201234567",
        "job_title": None, "language": "nl"}
CONTACT = {"external_id": "AAMk-1", "first_name": "Zoë", "last_name": "de Vries", "display_name": "Zoë de Vries",
           "company": "Café BV", "job_title": None, "emails": ("zoe@cafe.nl",),
           "phone_numbers": (PhoneNumber("mobile", "+31612345678"),)}


def test_a_users_link_row_written_before_compares_equal() -> None:
    assert user_field_hashes(USER) == {
        "first_name": "4173e3003e9003bb", "last_name": "2aa6f265903b91da", "email": "336987c9bfbafaa4",
        "phone_number": "73d60a387bf23a0d", "job_title": "be17fb7f04905369", "language": "91a32e30f8f3d289"}
    assert fields_hash(USER) == "2ceb6d4f93da994ec701249aec0d641a"


def test_a_contactmap_row_written_before_compares_equal() -> None:
    assert contact_hash(CONTACT) == "b7dfbdbce41599025d557962834b7dc5"
    assert field_hashes(CONTACT) == {
        "first_name": "f871740dcf025bc0", "last_name": "7d52dd81a7779a50", "display_name": "5151d9a98b9ae4b8",
        "company": "f9a9e61dc9728cfe", "job_title": "74234e98afe7498f", "emails": "6a3196222500b917",
        "phone_numbers": "0336d1e0df226000"}
    assert hold_key("1001", ["b", "a"]) == "bd23b80aa9b5db034f0225121bd61de8"
