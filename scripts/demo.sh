#!/usr/bin/env bash
# The main job end to end on the built-in synthetic sample set, through the local Prefect stack:
# start the stack, run the `preprocess` then the `train` deployment, print metrics and paths.
set -euo pipefail
PROJECT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$PROJECT"
scripts/stack.sh up
# shellcheck disable=SC1091
source "${PREFECT_HOME:-$PROJECT/.prefect}/env"
echo "== prefect deployment run preprocess/sample --watch"
prefect deployment run preprocess/sample --watch
echo "== prefect deployment run train/sample --watch"
prefect deployment run train/sample --watch
echo "== results"
.venv/bin/python scripts/demo_summary.py runs/sample
echo "Prefect UI: $(dirname "$PREFECT_API_URL")   (stop the stack with: make down)"
