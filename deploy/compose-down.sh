#!/usr/bin/env bash
# Stops the compose deployment. -v also deletes its volumes (storage arrays, Temporal's DB).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
compose down --remove-orphans "$@"
