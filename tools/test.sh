#!/usr/bin/env bash
# The whole check: lint, types, layering, then the test suite. Run tools/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check snapfs tests tools; ruff format --check snapfs tests tools
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== pytest"; pytest "$@"
