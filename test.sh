#!/usr/bin/env bash
# Run the whole test suite (creates .venv and installs the dev extras first).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/scripts/bootstrap.sh" dev
cd "$here"
.venv/bin/ruff check src tests
.venv/bin/mypy src
# Each package imports only from the layers below it (the contracts in pyproject.toml).
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -n 2 "$@"
