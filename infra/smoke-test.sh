#!/usr/bin/env bash
# Smoke test of one deployed customer: `nexxt365 doctor` with the deployed
# configuration. Settings come from the deployment outputs (named after the
# app settings), the two secrets from the customer's Key Vault, read with the
# caller's Azure CLI login. Secrets live only in this process's environment.
#
#   infra/smoke-test.sh <resource group> <deployment name>
#
# Needs: az (signed in), python3, and the nexxt365 command on PATH.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <resource group> <deployment name>" >&2
  exit 2
fi
resource_group=$1
deployment=$2

outputs=$(az deployment group show --resource-group "$resource_group" --name "$deployment" \
  --query properties.outputs --output json)

# Every output becomes a variable of the same name (values shell-quoted).
exports=$(python3 - "$outputs" <<'PY'
import json, re, shlex, sys
for name, output in sorted(json.loads(sys.argv[1]).items()):
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        print(f"export {name}={shlex.quote(str(output.get('value', '')))}")
PY
)
eval "$exports"

# The pipeline is not the app: it signs in with its own Azure CLI login.
unset NEXXT365_MANAGED_IDENTITY_CLIENT_ID

app_id=$(az functionapp show --resource-group "$resource_group" --name "$AZURE_FUNCTIONAPP_NAME" --query id --output tsv)
# How the app itself resolved its Key Vault references (cached by the platform for up to a day).
az rest --method get \
  --url "https://management.azure.com${app_id}/config/configreferences/appsettings?api-version=2022-03-01" \
  --query "value[?properties.status != 'Resolved'].{setting: name, status: properties.status, details: properties.details}" \
  --output table || echo "Could not read the Key Vault reference status of the app." >&2

if [[ ${NEXXT365_CLIENT_ASSERTION:-} == managed-identity ]]; then
  # Secretless: only the function app's own managed identity can sign in as the app registration.
  echo "::notice::Sign-in without a secret: the pipeline cannot act as the function app's managed identity. Check it with the function app's logs or 'nexxt365 doctor' run in the app (docs/deploy.md). Skipping nexxt365 doctor."
  exit 0
fi

if [[ -z ${NEXXT365_TENANTS_TABLE:-} ]]; then
  # Single-customer mode: the secrets must be there before doctor can say anything.
  stored=$(az keyvault secret list --vault-name "$AZURE_KEY_VAULT_NAME" --query "[].name" --output tsv)
  for name in "$GRAPH_CLIENT_SECRET_NAME" "$CLEARVOX_API_KEY_SECRET_NAME"; do
    if ! grep -qxF "$name" <<<"$stored"; then
      echo "::warning::Key Vault $AZURE_KEY_VAULT_NAME has no secret '$name' yet; store it (docs/deploy.md) and run this workflow again. Skipping nexxt365 doctor."
      exit 0
    fi
  done
  secret() {
    az keyvault secret show --vault-name "$AZURE_KEY_VAULT_NAME" --name "$1" --query value --output tsv
  }
  NEXXT365_CLIENT_SECRET=$(secret "$GRAPH_CLIENT_SECRET_NAME")
  NEXXT365_CLEARVOX_API_KEY=$(secret "$CLEARVOX_API_KEY_SECRET_NAME")
  if [[ -n ${GITHUB_ACTIONS:-} ]]; then
    echo "::add-mask::$NEXXT365_CLIENT_SECRET"
    echo "::add-mask::$NEXXT365_CLEARVOX_API_KEY"
  fi
  export NEXXT365_CLIENT_SECRET NEXXT365_CLEARVOX_API_KEY
fi
# Tenants-table mode: doctor reads the rows and their secrets from Key Vault itself.

exec nexxt365 doctor
