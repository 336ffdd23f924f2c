"""Fleet monitoring in the Bicep: one shared workspace on request, the workbook, and the four alert rules."""

from __future__ import annotations

from tests.infra.helpers import INFRA, MAIN, MODULES, parse, resources, variable


def test_a_customer_can_send_to_the_partners_existing_workspace() -> None:
    tree = parse(MODULES / "monitoring.bicep")
    res = resources(tree)
    assert tree["parameters"]["existingWorkspaceId"]["default"] == ""
    assert res["workspace"]["condition"] == "ownWorkspace", "no workspace of its own when one is given"
    target = res["appInsights"]["body"]["properties"]["WorkspaceResourceId"]["operator"]["operands"]
    assert target["false_value"] == "existingWorkspaceId"
    main = parse(MAIN)
    assert main["parameters"]["logAnalyticsWorkspaceId"]["default"] == ""
    assert main["modules"]["monitoring"]["config"]["params"]["existingWorkspaceId"] == "logAnalyticsWorkspaceId"


def test_fleet_template_deploys_the_workbook_and_the_alerts_on_one_workspace() -> None:
    tree = parse(INFRA / "fleet.bicep")
    assert set(tree["modules"]) == {"workbook", "alerts"}
    for module in tree["modules"].values():
        assert module["config"]["params"]["workspaceId"] == "workspaceId"
    assert tree["modules"]["alerts"]["config"]["params"]["partnerEmail"] == "partnerEmail"
    workbook = resources(parse(MODULES / "workbook.bicep"))["workbook"]
    assert workbook["type"] == "Microsoft.Insights/workbooks"
    assert workbook["body"]["properties"]["sourceId"] == "workspaceId"


def test_four_alert_rules_mail_the_partner() -> None:
    tree = parse(MODULES / "alerts.bicep")
    res = resources(tree)
    group = res["actionGroup"]["body"]["properties"]
    assert group["emailReceivers"][0]["emailAddress"] == "partnerEmail"
    assert res["alertRules"]["type"] == "Microsoft.Insights/scheduledQueryRules"
    rules = variable(tree, "rules")
    assert [r["name"] for r in rules] == ["sync-failing", "secret-expiring", "held-changes", "calendar-overrun"]
    body = res["alertRules"]["body"]["config"]["properties"]
    assert body["scopes"] == ["workspaceId"] and body["actions"]["actionGroups"]
    assert body["muteActionsDuration"] == "P1D", "one mail per problem and day"
