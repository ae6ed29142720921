#!/usr/bin/env bash
# System dependencies of the integration tests. Idempotent; a no-op when all is present.
# (The core suite needs none yet: SQLite ships with Python. Azurite, ODBC drivers and
# servers are added here as the tests that use them arrive.)
set -euo pipefail
exit 0
