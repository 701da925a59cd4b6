#!/usr/bin/env sh
# Headless load test: loadtest/run.sh URL USERS SECONDS [DATA_DIR] [options of loadtest/run.py]
exec python "$(dirname "$0")/run.py" "$@"
