"""The company phone book's pure rules: the setting, and who counts as the same person."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import Options
from shared.sync.contacts.mapping import MappedContact, map_contact, person_key


def options(value: str) -> Options:
    return Options.from_values(lambda name: value if name == "NEXXT365_COMPANY_CONTACTS" else None)


def test_the_setting_is_a_comma_separated_list_of_mailbox_addresses_in_order_each_once() -> None:
    assert options(" Receptie@Contoso.nl, info@contoso.nl,,receptie@contoso.nl ").company_contacts == (
        "receptie@contoso.nl", "info@contoso.nl")
    assert options("").company_contacts == () and Options().company_contacts == ()


@pytest.mark.parametrize("value", ["receptie", "receptie@contoso.nl;info@contoso.nl", "a b@contoso.nl"])
def test_anything_else_is_refused_naming_the_setting_with_an_example(value: str) -> None:
    with pytest.raises(ConfigError, match=r"NEXXT365_COMPANY_CONTACTS.*e\.g\. receptie@contoso\.nl"):
        options(value)


def test_a_customer_override_in_the_tenants_table_applies() -> None:
    assert Options().merged({"COMPANY_CONTACTS": "info@contoso.nl"}).company_contacts == ("info@contoso.nl",)


def mapped(**props: object) -> MappedContact:
    result = map_contact({"id": "g1", "displayName": "Jansen BV", "businessPhones": ["020 123 4567"], **props})
    assert isinstance(result, MappedContact)
    return result


def test_the_same_person_is_the_same_name_and_numbers_whatever_the_case_spacing_or_order() -> None:
    one = mapped(mobilePhone="06 12345678")
    assert person_key(one) == person_key(mapped(displayName="jansen  BV", businessPhones=["+31 6 12345678"],
                                                mobilePhone="+31201234567"))
    assert person_key(one) != person_key(mapped(mobilePhone="06 12345679"))
    assert person_key(one) != person_key(mapped(displayName="Jansen B.V.", mobilePhone="06 12345678"))
