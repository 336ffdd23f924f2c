#!/usr/bin/env bash
# Static checks of the infrastructure and the deployment workflow; no Azure
# needed. Run by `make test`; the pytest side is tests/infra.
#   - checkov on the Bicep (zero failures; every skip carries its reason)
#   - checkov on the GitHub workflows
#   - actionlint (with shellcheck for `run:` steps) on the workflows
#   - shellcheck on the infra scripts
# The linters live in .venv-infra, reinstalled only when
# infra/requirements-lint.txt changes (its hash is kept in a stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-infra
requirements=infra/requirements-lint.txt
stamp=$venv/.requirements.sha256
python=${PYTHON:-python3}

wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x $venv/bin/checkov || ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "infra/check.sh: installing $requirements into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$wanted" >"$stamp"
fi
export PATH="$PWD/$venv/bin:$PATH"

report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT

# --skip-download: no calls to the vendor's platform, only the built-in checks.
# entra-app.bicep is skipped: it uses the `extension` keyword (Microsoft Graph),
# which the Bicep parser pinned by checkov predates, and it declares no Azure
# resource checkov has a policy for. tests/infra parses it with a newer parser.
echo "== checkov (bicep)"
checkov --directory infra --framework bicep --skip-download --quiet --compact \
  --skip-path 'entra-app\.bicep$' \
  --output cli --output json --output-file-path "console,$report/results.json"

# A file checkov cannot parse is silently left out: fail on that too.
"$python" - "$report/results.json" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    data = json.load(f)
summary = (data[0] if isinstance(data, list) else data)["summary"]
if summary["parsing_errors"]:
    sys.exit(f"checkov could not parse {summary['parsing_errors']} Bicep file(s); run it with LOG_LEVEL=DEBUG to see which")
if summary["resource_count"] == 0:
    sys.exit("checkov found no Bicep resources")
PY

echo "== checkov (github_actions)"
checkov --directory .github/workflows --framework github_actions --skip-download --quiet --compact

echo "== actionlint"
actionlint

echo "== shellcheck"
shellcheck infra/*.sh

echo "infra/check.sh: all checks passed"
