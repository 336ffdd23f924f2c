"""Every Bicep and parameter file parses; modules are local; role assignments live in one module;
the security settings the issue asks for are in place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.helpers import (
    INFRA,
    MAIN,
    MODULES,
    bicep_files,
    param_files,
    parse,
    parse_bicepparam,
    rel,
    resources,
    using_path,
    variable,
)

ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"


def test_there_is_something_to_check() -> None:
    names = {rel(p) for p in bicep_files()}
    assert {"infra/main.bicep", "infra/entra-app.bicep", "infra/modules/roles.bicep"} <= names
    assert param_files(), "no infra/customers/*.bicepparam"


@pytest.mark.parametrize("path", bicep_files(), ids=rel)
def test_bicep_file_parses(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules"), f"{rel(path)} declares nothing"


@pytest.mark.parametrize("path", param_files(), ids=rel)
def test_param_file_parses_and_fits_main(path: Path) -> None:
    assert using_path(path) == MAIN.resolve()
    values = parse_bicepparam(path)
    declared = parse(MAIN)["parameters"]
    unknown = sorted(set(values) - set(declared))
    assert not unknown, f"{rel(path)} sets parameters main.bicep does not have: {unknown}"
    required = {name for name, spec in declared.items() if "default" not in spec}
    missing = sorted(required - set(values))
    assert not missing, f"{rel(path)} leaves required parameters unset: {missing}"


@pytest.mark.parametrize("path", bicep_files(), ids=rel)
def test_modules_are_files_of_this_repository(path: Path) -> None:
    # A registry module (br:, ts:) would be invisible to checkov.
    for name, module in parse(path).get("modules", {}).items():
        assert module["type"] == "local", f"{rel(path)}: module {name} is not a local file"
        assert (path.parent / module["detail"]["path"]).is_file(), f"{rel(path)}: module {name} file missing"


@pytest.mark.parametrize("path", bicep_files(), ids=rel)
def test_role_assignments_only_in_roles_module(path: Path) -> None:
    if path == MODULES / "roles.bicep":
        return
    found = [n for n, r in resources(parse(path)).items() if r["type"] == ROLE_ASSIGNMENT]
    assert not found, f"{rel(path)} assigns roles ({found}); keep them in modules/roles.bicep"


def test_roles_module_names_its_role_ids_and_uses_guid_names() -> None:
    tree = parse(MODULES / "roles.bicep")
    for name, role_id in ROLE_IDS.items():
        assert variable(tree, name) == role_id, name
    app_roles = set()
    for name, res in resources(tree).items():
        if res["type"] != ROLE_ASSIGNMENT or res["existing"]:
            continue
        body = res["body"]
        assert body["name"]["function"]["type"] == "guid", f"{name}: name must be guid(scope, principal, role)"
        definition = body["properties"]["roleDefinitionId"]["function"]
        assert definition["type"] == "subscription_resource_id", name
        role_var = definition["parameters"]["resource_name_1"]
        assert role_var in tree["variables"], f"{name}: role definition must be a named variable"
        if body["properties"]["principalId"] == "appPrincipalId":
            assert res["condition"] is None, f"{name}: the app's roles are unconditional"
            app_roles.add(role_var)
    assert app_roles == set(ROLE_IDS), "the app identity must get exactly the five roles"


def test_every_checkov_skip_has_a_reason() -> None:
    # Bicep comments are //; checkov reads `checkov:skip=ID:reason` from them.
    pattern = re.compile(r"^\s*// checkov:skip=CKV2?_[A-Z]+_\d+:\s*\S.{10,}$")
    for path in bicep_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "checkov:skip" in line:
                assert pattern.match(line), f"{rel(path)}:{number}: a skip needs `// checkov:skip=ID:reason`"


def test_storage_is_entra_only() -> None:
    storage = resources(parse(MODULES / "storage.bicep"))["storage"]["body"]["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    vault = resources(parse(MODULES / "keyvault.bicep"))["vault"]["body"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert "accessPolicies" not in vault


def test_key_vault_writes_a_secret_only_when_given() -> None:
    tree = parse(MODULES / "keyvault.bicep")
    for param in ("clientSecret", "clearvoxApiKey"):
        spec = tree["parameters"][param]
        assert {"type": "secure"} in spec["decorators"], param
        assert spec["default"] == "", f"{param} may be empty (set later by the runbook)"
    for name in ("clientSecretValue", "clearvoxApiKeyValue"):
        condition = tree["modules"][name]["config"]["condition"]
        assert condition["operator"]["type"] == "not", f"{name} must be conditional on a non-empty value"


def test_application_insights_without_local_auth() -> None:
    tree = parse(MODULES / "monitoring.bicep")
    assert resources(tree)["appInsights"]["body"]["properties"]["DisableLocalAuth"] is True


def test_function_app_on_flex_consumption_with_the_user_assigned_identity() -> None:
    tree = parse(MODULES / "functionapp.bicep")
    res = resources(tree)
    assert res["plan"]["body"]["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert res["plan"]["body"]["properties"]["reserved"] is True
    app = res["app"]["body"]
    assert app["kind"] == "functionapp,linux"
    assert app["identity"]["type"] == "UserAssigned"
    props = app["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert tree["parameters"]["pythonVersion"]["default"] == "3.11"
    auth = config["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    loop = props["siteConfig"]["appSettings"]["loop_type"]["detail"]["array_name"]["function"]
    assert loop == {"type": "items", "parameters": {"arg_1": "appSettings"}}, "app settings come from the parameter"
    for policy in ("ftpCredentials", "scmCredentials"):
        assert res[policy]["body"]["properties"] == {"allow": False}, policy


def test_main_waits_for_the_roles_before_the_app() -> None:
    module = parse(MAIN)["modules"]["functionApp"]["config"]
    assert "roles" in module["dependsOn"]


def test_globally_unique_names_fit_their_limits() -> None:
    # Storage accounts and vaults allow 24 characters; customer is at most 12, the suffix 8.
    tree = parse(MAIN)
    names = variable(tree, "names")
    for key in ("storage", "keyVault"):
        assert names[key]["function"]["type"] == "take", key
        assert names[key]["function"]["parameters"]["number_to_take"] == 24, key
    decorators = tree["parameters"]["customer"]["decorators"]
    assert {"type": "max_length", "argument": 12} in decorators
    suffix = variable(tree, "suffix")["function"]
    assert suffix["type"] == "take" and suffix["parameters"]["number_to_take"] == 8


def test_infra_has_no_stray_files() -> None:
    # Everything under infra/ is read by a check or by the deployment.
    allowed_suffixes = {".bicep", ".bicepparam", ".json", ".kql", ".sh", ".txt"}
    stray = [rel(p) for p in INFRA.rglob("*") if p.is_file() and p.suffix not in allowed_suffixes]
    assert not stray, stray
