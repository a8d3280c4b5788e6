#!/usr/bin/env bash
# Regenerates docs/api.md, the API reference, from the contracts' comments (scripts/gen-api-doc.py
# reads what `buf build` compiles from proto/). With --check (part of `make lint`) it changes
# nothing and fails if docs/api.md is not what regenerating would write.
source "$(dirname "$0")/lib.sh"

mode="${1:-}"
[[ $# -le 1 && ( -z $mode || $mode == --check ) ]] || die "usage: scripts/api-doc.sh [--check]"

ensure_venv
BUF="$ORDERFLOW_HOME/venv/bin/buf"
if ! [[ -x $BUF ]]; then
  step "Installing buf (PyPI buf-bin)"
  "$ORDERFLOW_HOME/venv/bin/pip" install -q --disable-pip-version-check buf-bin
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$REPO_ROOT/proto" && "$BUF" build --exclude-imports -o "$work/image.json")
"$ORDERFLOW_HOME/venv/bin/python3" "$REPO_ROOT/scripts/gen-api-doc.py" "$work/image.json" >"$work/api.md"

doc="$REPO_ROOT/docs/api.md"
if [[ $mode == --check ]]; then
  if ! cmp -s "$work/api.md" "$doc"; then
    if [[ -f $doc ]]; then
      diff -u "$doc" "$work/api.md" | head -n 40 >&2 || true
    fi
    die "docs/api.md is out of date; run scripts/api-doc.sh"
  fi
  note "docs/api.md is up to date"
elif cmp -s "$work/api.md" "$doc"; then
  note "docs/api.md was already up to date"
else
  cat "$work/api.md" >"$doc"
  note "wrote docs/api.md"
fi
