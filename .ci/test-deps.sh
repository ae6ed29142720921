#!/usr/bin/env bash
# System dependencies of the integration tests. Idempotent: a no-op when all is present.
#   - unixODBC + psqlODBC (Debian: unixodbc, odbc-postgresql) for the ODBC store tests;
#   - PostgreSQL server binaries (Debian: postgresql) so a machine without a running
#     server can start a throwaway cluster (tests/support/postgres.py);
#   - kubectl (Debian: kubernetes-client) to render the Kubernetes overlays offline;
#   - Chromium (Debian: chromium) to render `sensorflow report`'s page headless (tests/test_report.py);
#   - Azurite 3 (npm) in .cache/azurite for Blob storage tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need_apt=()
odbcinst -q -d -n "PostgreSQL Unicode" >/dev/null 2>&1 || need_apt+=(unixodbc odbc-postgresql)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)  # `kubectl kustomize` renders the overlays
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # headless: the report's page is checked in a real browser
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "test-deps: installing ${need_apt[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null; }
fi

if [ ! -x .cache/azurite/node_modules/.bin/azurite-blob ]; then
    echo "test-deps: installing Azurite 3 from npm into .cache/azurite"
    npm install --prefix .cache/azurite --no-audit --no-fund --loglevel=error azurite@3 >/dev/null
fi
