#!/usr/bin/env bash
# Runs the README's grpcurl session verbatim against a running `make run`, so the README cannot
# drift from what the services answer. Fails on the first command that fails.
source "$(dirname "$0")/lib.sh"

session=$(awk '/^## Try it with grpcurl/ { section = 1 }
               section && /^```sh$/ { inside = 1; next }
               inside && /^```$/ { exit }
               inside { print }' "$REPO_ROOT/README.md")
[[ -n $session ]] || die "no grpcurl session found in README.md"
port_open 127.0.0.1 50051 || die "order-api is not running: start it with 'make run'"
bash -euo pipefail -x -c "$session"
