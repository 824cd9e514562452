#!/usr/bin/env bash
# MISRA C:2012 check of edgec's C (generated code of the test models and firmware/) with
# cppcheck's MISRA addon: prints the findings per 1,000 lines and per rule, fails when a rule
# exceeds its ceiling in scripts/misra.toml (deviations: docs/misra.md). Needs cppcheck
# (apt-get install cppcheck; scripts/setup.sh installs it). Arguments go to scripts/misra.py
# (--json for the counts, --keep DIR to keep the analysed sources).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/misra.py "$@"
