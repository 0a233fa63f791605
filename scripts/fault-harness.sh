#!/bin/sh
# Fault-injection harness (kill -9 the server, stop PostgreSQL under it); see the .py.
exec python3 "$(dirname "$0")/fault-harness.py" "$@"
