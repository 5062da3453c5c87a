#!/usr/bin/env bash
# Esper's main job: grow a model on the default task (mnist1d) and report.
# Creates .venv and installs everything on first use. Extra arguments go to
# `esper train` (e.g. ./run.sh --task mnist1d-blind --epochs 30).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/scripts/bootstrap.sh" ""
exec "$here/.venv/bin/esper" train "$@"
