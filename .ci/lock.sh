#!/usr/bin/env bash
# Regenerate the pinned, hashed lock files from pyproject.toml (pip-tools' pip-compile):
#   requirements.lock       the package's dependencies + extras azure, odbc, and the build backend
#                           (setuptools, wheel): what the image installs (Dockerfile);
#   requirements-test.lock  the same pins + the test extra: what `make test` and CI install.
# Existing pins are kept unless --upgrade (or --upgrade-package NAME) is passed through.
# Resolves for this machine's Python (3.11, Linux x86_64) from PyPI only, ignoring local pip
# configuration (extra indexes, find-links), so every hash is one PyPI serves.
#   bash .ci/lock.sh [pip-compile options, e.g. --upgrade]
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${LOCK_VENV:-/tmp/sensorflow-lockvenv}
if [ ! -x "$tools/bin/pip-compile" ]; then
    python3.11 -m venv "$tools" 2>/dev/null || python3 -m venv "$tools"
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$tools/bin/pip" install --quiet "pip-tools==7.*"
fi
compile() {
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="bash .ci/lock.sh" \
        "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url "$@"
}
compile --extra azure --extra odbc --all-build-deps --output-file requirements.lock "$@" pyproject.toml
# The test lock starts from the runtime pins so both install the same versions.
compile --extra test --extra azure --extra odbc --all-build-deps --constraint requirements.lock \
    --output-file requirements-test.lock "$@" pyproject.toml
echo "lock: wrote requirements.lock and requirements-test.lock"
