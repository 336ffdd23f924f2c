"""The demo tenant: about 25 users covering the ClearVox guide's cases, contacts and meetings happening now."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.sandbox.world import World

DOMAIN = "voorbeeld.nl"
COMPANY_CONTACTS = (f"receptie@{DOMAIN}",)  # the demo's NEXXT365_COMPANY_CONTACTS: its shared mailbox

# given, surname, department, job title, business phone, mobile
PEOPLE = [
    ("Anna", "de Vries", "Verkoop", "Accountmanager", "020 123 4567", "06 12345678"),
    ("Bas", "Jansen", "Verkoop", "Binnendienst", "020 123 4568", None),
    ("Chantal", "Bakker", "Support", "Supportmedewerker", "020 123 4569", "06 23456789"),
    ("Daan", "Visser", "Support", "Teamleider support", "+31 20 123 4570", None),
    ("Emma", "Smit", "Financiën", "Controller", None, "+31 6 34567890"),
    ("Finn", "Meijer", "ICT", "Systeembeheerder", "020-1234571", None),
    ("Gert", "van den Berg", "ICT", "Netwerkbeheerder", None, None),
    ("Hanna", "Mulder", "HR", "HR-adviseur", "020 123 4572", None),
    ("Iris", "de Boer", "Directie", "Directeur", "020 123 4573", "06 45678901"),
    ("Joost", "Dekker", "Verkoop", "Accountmanager", "020 123 4574", None),
    ("Kim", "Peters", "Marketing", "Marketeer", None, "06 56789012"),
    ("Lars", "Hendriks", "Logistiek", "Planner", "020 123 4575", None),
    ("Mila", "van Leeuwen", "Logistiek", "Magazijnmedewerker", None, None),
    ("Noah", "Dijkstra", "Support", "Supportmedewerker", "020 123 4576", None),
    ("Olga", "Vos", "Financiën", "Boekhouder", "020 123 4577", None),
    ("Pim", "Willems", "Verkoop", "Binnendienst", "020 123 4578", None),
    ("Quinty", "Bos", "Receptie", "Receptioniste", "020 123 4500", None),
    ("Ruben", "Kok", "ICT", "Developer", None, "06 67890123"),
    ("Sanne", "Kramer", "Marketing", "Contentmaker", "020 123 4579", None),
]


@dataclass
class DemoIds:
    """Object ids of the users the demo talks about."""

    by_name: dict[str, str] = field(default_factory=dict)
    public_contact_owner: str = ""
    public_contact_graph_id: str = ""


def seed(world: World, now: datetime) -> DemoIds:
    """Populate both simulators. `now` is the moment the demo evaluates the calendar at."""
    g, cv = world.graph, world.clearvox
    ids = DemoIds()
    for given, surname, dept, title, phone, mobile in PEOPLE:
        mail = f"{given.lower()}.{surname.lower().replace(' ', '')}@{DOMAIN}"
        ids.by_name[given] = g.add_user(
            displayName=f"{given} {surname}", givenName=given, surname=surname, mail=mail, userPrincipalName=mail,
            department=dept, jobTitle=title, businessPhones=[phone] if phone else [], mobilePhone=mobile,
            preferredLanguage="nl-NL",
        )
    # The guide's special cases.
    ids.by_name["Tom"] = g.add_user(displayName="Tom Zonder Mail", givenName="Tom", surname="Zonder Mail",
                                    userPrincipalName=f"tom@{DOMAIN}")  # no email in contact info
    ids.by_name["Ursula"] = g.add_user(displayName="Ursula Bestaat", givenName="Ursula", surname="Bestaat",
                                       mail=f"ursula@{DOMAIN}", userPrincipalName=f"ursula@{DOMAIN}")
    cv.add_user(first_name="Ursula", last_name="Bestaat", email=f"Ursula@{DOMAIN}")  # already in ClearVox: skipped
    ids.by_name["Victor"] = g.add_user(displayName="Victor Gekoppeld", givenName="Victor", surname="Gekoppeld",
                                       mail=f"victor@{DOMAIN}", userPrincipalName=f"victor@{DOMAIN}")
    cv.add_user(first_name="Victor", last_name="Gekoppeld", email=f"victor@{DOMAIN}",
                external_application_id=ids.by_name["Victor"])  # pre-linked by an admin
    ids.by_name["Wendy"] = g.add_user(displayName="Wendy Uit Dienst", givenName="Wendy", surname="Uit Dienst",
                                      mail=f"wendy@{DOMAIN}", accountEnabled=False)  # disabled
    ids.by_name["Xander"] = g.add_user(displayName="Xander (extern)", givenName="Xander", surname="Extern",
                                       mail="xander@partner.example", userType="Guest")  # guest
    ids.by_name["Yara"] = g.add_user(displayName="Yara Geen Mailbox", givenName="Yara", surname="Geen Mailbox",
                                     mail=f"yara@{DOMAIN}", has_mailbox=False)

    # Personal contacts.
    anna = ids.by_name["Anna"]
    g.add_contact(anna, displayName="Pieter Klant", givenName="Pieter", surname="Klant", companyName="Klant B.V.",
                  businessPhones=["010 765 4321"], mobilePhone="06 11122233",
                  emailAddresses=[{"name": "Pieter", "address": "pieter@klant.example"}])
    g.add_contact(anna, displayName="Leverancier Zonder Nummer", companyName="Leverancier B.V.",
                  emailAddresses=[{"name": "info", "address": "info@leverancier.example"}])  # skipped: nothing to dial
    g.add_contact(anna, displayName="Typfout", businessPhones=["bel mij"], mobilePhone="06 21234567")  # one number dropped
    ids.public_contact_owner = anna
    ids.public_contact_graph_id = g.add_contact(anna, displayName="Installateur Jansen", businessPhones=["030 222 3344"])
    folder = g.add_contact_folder(anna, "Klanten")
    g.add_contact(anna, folder, displayName="Grote Klant N.V.", companyName="Grote Klant N.V.", businessPhones=["+32 2 555 12 34"])
    for name in ("Bas", "Chantal", "Daan"):
        for n in range(3):
            g.add_contact(ids.by_name[name], displayName=f"Relatie {n + 1} van {name}", businessPhones=[f"020 555 00{n}{len(name)}"])

    # The company phone book: a shared mailbox (no sign-in, no licence) with suppliers and services.
    receptie = g.add_user(displayName="Receptie", mail=COMPANY_CONTACTS[0], userPrincipalName=COMPANY_CONTACTS[0],
                          accountEnabled=False)
    g.add_contact(receptie, displayName="Storingsdienst Lift", companyName="Lift B.V.", businessPhones=["0800 123 4567"])
    g.add_contact(receptie, displayName="Schoonmaakbedrijf Schoon", businessPhones=["030 123 9876"])
    g.add_contact(receptie, g.add_contact_folder(receptie, "Leveranciers"), displayName="Drukkerij De Pers",
                  businessPhones=["010 444 5566"], emailAddresses=[{"name": "orders", "address": "orders@depers.example"}])

    # The calendar around `now`.
    g.add_event(ids.by_name["Anna"], "Klantbezoek", now - timedelta(minutes=20), now + timedelta(minutes=40), show_as="busy")
    g.add_event(ids.by_name["Bas"], "Teamoverleg", now - timedelta(minutes=5), now + timedelta(minutes=25), show_as="tentative")
    g.add_event(ids.by_name["Chantal"], "Thuiswerken", now - timedelta(hours=2), now + timedelta(hours=3), show_as="workingElsewhere")
    today = now.astimezone(ZoneInfo("Europe/Amsterdam")).date()  # the mailboxes' time zone
    g.add_event(ids.by_name["Daan"], "Vakantie", today, today + timedelta(days=1), show_as="oof", is_all_day=True)
    g.add_event(ids.by_name["Emma"], "Geannuleerd overleg", now - timedelta(minutes=10), now + timedelta(minutes=20),
                show_as="busy", is_cancelled=True)
    g.add_event(ids.by_name["Finn"], "Privé afspraak", now - timedelta(minutes=15), now + timedelta(minutes=15),
                show_as="busy", sensitivity="private")
    g.add_event(ids.by_name["Gert"], "Lunch", now - timedelta(minutes=30), now + timedelta(minutes=30), show_as="free")
    return ids


def teams_call(world: World, ids: DemoIds) -> None:
    """Teams presence (NEXXT365_TEAMS_PRESENCE): the app may read it, and Gert takes an ad-hoc Teams call."""
    roles = world.graph.apps[world.client_id].roles
    world.graph.set_app_roles(world.client_id, [*roles, "Presence.Read.All"])
    world.graph.expire_access_tokens()  # consent shows in the next token
    world.graph.set_presence(ids.by_name["Gert"], "Busy", "InACall")
