"""The deployment workflow and azure.yaml have the shape docs/deploy.md describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.infra.helpers import ROOT

WORKFLOW = ROOT / ".github/workflows/deploy.yml"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if str(s.get("uses", "")).lower().startswith(action.lower() + "@")]


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


EXAMPLE_MARKER = "// nexxt365: example, not deployed"


def test_matrix_over_every_customer_file() -> None:
    jobs = load(WORKFLOW)["jobs"]
    script = runs(jobs["customers"])
    assert 'glob("*.bicepparam")' in script and "infra/customers" in script
    # Only the example is left out, by a marker line in the file itself.
    assert EXAMPLE_MARKER in script
    example = ROOT / "infra/customers/contoso.bicepparam"
    if example.exists():
        assert EXAMPLE_MARKER in example.read_text(encoding="utf-8").splitlines()
    deploy = jobs["deploy"]
    assert deploy["strategy"]["matrix"]["customer"] == "${{ fromJSON(needs.customers.outputs.matrix) }}"
    assert deploy["strategy"]["fail-fast"] is False


def test_oidc_login_without_stored_azure_secrets() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "secrets." not in text, "no stored secrets: OIDC and repository variables only"
    workflow = load(WORKFLOW)
    assert workflow["permissions"] == {"contents": "read"}
    deploy = workflow["jobs"]["deploy"]
    assert deploy["permissions"]["id-token"] == "write"
    (login,) = uses(deploy, "azure/login")
    assert login["with"] == {
        "client-id": "${{ vars.AZURE_CLIENT_ID }}",
        "tenant-id": "${{ vars.AZURE_TENANT_ID }}",
        "subscription-id": "${{ vars.AZURE_SUBSCRIPTION_ID }}",
    }


def test_deploys_infrastructure_code_then_runs_doctor() -> None:
    deploy = load(WORKFLOW)["jobs"]["deploy"]
    script = runs(deploy)
    assert "az deployment group create" in script
    assert '--parameters "infra/customers/$CUSTOMER.bicepparam"' in script
    (publish,) = uses(deploy, "Azure/functions-action")
    assert publish["with"]["package"] == "app.zip"
    assert "infra/smoke-test.sh" in script
    order = [s.get("name", s.get("uses", "")) for s in steps(deploy)]
    assert order.index("Infrastructure") < order.index("Function code") < order.index("Smoke test (nexxt365 doctor)")
    assert (ROOT / "infra/smoke-test.sh").is_file()


def test_package_holds_the_dependencies() -> None:
    script = runs(load(WORKFLOW)["jobs"]["package"])
    assert "-r requirements.txt --target .python_packages/lib/site-packages" in script


def test_azure_yaml_deploys_one_customer_with_azd() -> None:
    azd = load(ROOT / "azure.yaml")
    assert azd["infra"]["path"] == "infra"
    assert azd["services"]["api"]["language"] == "python"
    assert azd["services"]["api"]["host"] == "function"
