#!/usr/bin/env bash
# Lints the contracts with buf (STANDARD rules, see proto/buf.yaml). buf comes from PyPI
# (buf-bin) into the private virtualenv under $ORDERFLOW_HOME.
source "$(dirname "$0")/lib.sh"

BUF="$ORDERFLOW_HOME/venv/bin/buf"
if ! [[ -x $BUF ]]; then
  step "Installing buf (PyPI buf-bin)"
  ensure_venv
  "$ORDERFLOW_HOME/venv/bin/pip" install -q --disable-pip-version-check buf-bin
fi
cd "$REPO_ROOT/proto"
"$BUF" lint
note "contracts lint clean (buf STANDARD)"
