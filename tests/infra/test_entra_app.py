"""entra-app.bicep: the app registration with admin consent for exactly the three Graph permissions,
and Presence.Read.All only behind the teamsPresence parameter."""

from __future__ import annotations

import json
import re

from tests.infra.helpers import ENTRA_APP, INFRA, parse, resolve, resources, variable

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# Microsoft Graph application permissions (app roles), from Microsoft's permissions reference.
PERMISSIONS = {
    "df021288-bdef-4463-88db-98f22de89214": "User.Read.All",
    "798ee544-9d2d-430c-a058-570e29e34338": "Calendars.Read",
    "089fe4d0-434a-44c5-8827-41ba8a0b17f5": "Contacts.Read",
}
PRESENCE_READ_ALL = "a70e0c2d-e793-494c-94c4-118fa0a67f42"  # only with teamsPresence=true


def test_uses_the_graph_extension_declared_in_bicepconfig() -> None:
    assert parse(ENTRA_APP)["extensions"], "entra-app.bicep must declare `extension microsoftGraphV1`"
    assert re.search(r"^extension microsoftGraphV1\s*$", ENTRA_APP.read_text(encoding="utf-8"), re.MULTILINE)
    text = (INFRA / "bicepconfig.json").read_text(encoding="utf-8")
    config = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))  # bicepconfig allows // comments
    reference = config["extensions"]["microsoftGraphV1"]
    assert re.fullmatch(r"br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+", reference)


def test_grants_exactly_the_three_application_permissions() -> None:
    tree = parse(ENTRA_APP)
    res = resources(tree)
    graph = [n for n, r in res.items() if r["type"] == "Microsoft.Graph/servicePrincipals" and r["existing"]]
    assert len(graph) == 1
    assert resolve(tree, res[graph[0]]["body"]["appId"]) == GRAPH_APP_ID
    apps = [n for n, r in res.items() if r["type"] == "Microsoft.Graph/applications" and not r["existing"]]
    sps = [n for n, r in res.items() if r["type"] == "Microsoft.Graph/servicePrincipals" and not r["existing"]]
    assert len(apps) == 1 and len(sps) == 1
    sp_app = res[sps[0]]["body"]["appId"]["operator"]["operands"]
    assert (sp_app["operand_1"], sp_app["operand_2"]) == (apps[0], "appId")

    granted = []
    for name, r in res.items():
        if r["type"] != "Microsoft.Graph/appRoleAssignedTo":
            continue
        if resolve(tree, r["body"]["appRoleId"]) == PRESENCE_READ_ALL:
            operands = r["condition"]["operator"]["operands"]
            assert set(operands.values()) == {"consentInThisTenant", "teamsPresence"}, \
                "Presence.Read.All is granted only with teamsPresence=true (and consent in this tenant)"
            continue
        body = r["body"]
        principal = body["principalId"]["operator"]["operands"]
        target = body["resourceId"]["operator"]["operands"]
        assert (principal["operand_1"], principal["operand_2"]) == (sps[0], "id"), name
        assert (target["operand_1"], target["operand_2"]) == (graph[0], "id"), name
        granted.append(resolve(tree, body["appRoleId"]))
    assert sorted(granted) == sorted(PERMISSIONS), {PERMISSIONS.get(g, g) for g in granted}


def test_declares_the_same_permissions_as_required_resource_access() -> None:
    tree = parse(ENTRA_APP)
    app = next(r for r in resources(tree).values() if r["type"] == "Microsoft.Graph/applications")
    (access,) = app["body"]["requiredResourceAccess"]
    assert resolve(tree, access["resourceAppId"]) == GRAPH_APP_ID
    always, optional = access["resourceAccess"]["function"]["parameters"].values()  # concat(always, optional)
    assert {resolve(tree, a["id"]) for a in always} == set(PERMISSIONS)
    operands = optional["operator"]["operands"]
    assert (operands["condition"], operands["false_value"]) == ("teamsPresence", [])
    assert [resolve(tree, a["id"]) for a in operands["true_value"]] == [PRESENCE_READ_ALL]
    assert {a["type"] for a in [*always, *operands["true_value"]]} == {"Role"}
    audience = app["body"]["signInAudience"]["operator"]
    assert audience["type"] == "conditional" and audience["operands"]["condition"] == "multitenant"
    assert (audience["operands"]["true_value"], audience["operands"]["false_value"]) == ("AzureADMultipleOrgs", "AzureADMyOrg")
    assert parse(ENTRA_APP)["parameters"]["multitenant"]["default"] is False  # single tenant unless asked


def test_the_app_its_consent_and_an_optional_federated_credential_and_nothing_else() -> None:
    types = {r["type"] for r in resources(parse(ENTRA_APP)).values()}
    assert types == {
        "Microsoft.Graph/applications",
        "Microsoft.Graph/applications/federatedIdentityCredentials",
        "Microsoft.Graph/servicePrincipals",
        "Microsoft.Graph/appRoleAssignedTo",
    }


def test_the_federated_credential_trusts_the_managed_identity_when_asked() -> None:
    tree = parse(ENTRA_APP)
    (fic,) = [r for r in resources(tree).values() if r["type"] == "Microsoft.Graph/applications/federatedIdentityCredentials"]
    condition = fic["condition"]["operator"]
    assert condition["type"] == "not"
    assert condition["operands"]["bool_value"]["function"]["parameters"]["item_to_test"] == "managedIdentityPrincipalId"
    assert tree["parameters"]["managedIdentityPrincipalId"]["default"] == ""  # off unless a principal ID is given
    body = fic["body"]
    assert body["name"].startswith("${app.uniqueName}/")  # Graph child resources are named <parent uniqueName>/<name>
    assert resolve(tree, body["issuer"]) == "https://login.microsoftonline.com/${tenant().tenantId}/v2.0"
    assert body["subject"] == "managedIdentityPrincipalId"
    assert [resolve(tree, a) for a in body["audiences"]] == ["api://AzureADTokenExchange"]


def test_consent_in_the_partner_tenant_can_be_left_out() -> None:
    tree = parse(ENTRA_APP)
    assert tree["parameters"]["consentInThisTenant"]["default"] is True
    grants = [r for r in resources(tree).values() if r["type"] == "Microsoft.Graph/appRoleAssignedTo"]
    assert grants and all("consentInThisTenant" in json.dumps(r["condition"]) for r in grants)


def test_permission_ids_are_named_variables() -> None:
    tree = parse(ENTRA_APP)
    assert {variable(tree, n) for n in ("userReadAll", "calendarsRead", "contactsRead")} == set(PERMISSIONS)
    assert variable(tree, "presenceReadAll") == PRESENCE_READ_ALL
