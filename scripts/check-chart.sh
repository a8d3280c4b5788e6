#!/usr/bin/env bash
# Verifies the Helm chart (deploy/helm/orderflow) and the image build (deploy/Dockerfile) without
# a cluster or a Docker engine, which this machine has neither of:
#   1. shellcheck of every script (scripts/*.sh, .ci/run);
#   2. `helm lint --strict` with the default values and with ci/all-features-values.yaml;
#   3. `helm template` of both, every manifest validated against the Kubernetes $KUBE_VERSION
#      OpenAPI schemas by `kubernetes-validate --strict` (the CRD kinds, which it has no schema
#      for, are left to step 4);
#   4. tests/chart/check_chart.py: the facts that matter, asserted on the rendered manifests of
#      several value sets; values.schema.json must reject bad values; the Dockerfile statically;
#   5. tests/chart/check_binaries.py: each binary (built by `cargo build --workspace --bins`)
#      started with --check-config and the env, args and mounted files of its rendered
#      Deployment or Job container, for several value sets: it must accept them (and refuse
#      four broken copies).
# Tools come from scripts/ensure-chart-tools.sh (installed once under $ORDERFLOW_HOME/chart-tools).
# Ends with one summary line; exits non-zero on the first failing step.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KUBE_VERSION=1.30.0
CHART="$REPO_ROOT/deploy/helm/orderflow"
TOOLS="$ORDERFLOW_HOME/chart-tools"
HELM="$TOOLS/bin/helm"
VENV="$TOOLS/venv"
# Custom resources kubernetes-validate has no schema for; check_chart.py checks their fields.
CRD_KINDS="ScaledObject ServiceMonitor PodMonitor"

start=$SECONDS
"$REPO_ROOT/scripts/ensure-chart-tools.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "shellcheck of every script"
"$VENV/bin/shellcheck" -x --source-path=SCRIPTDIR "$REPO_ROOT"/scripts/*.sh "$REPO_ROOT/.ci/run" ||
  die "shellcheck found problems in the scripts"

manifests=0
for set in defaults all-features; do
  values=()
  if [[ $set == all-features ]]; then values=(-f "$CHART/ci/all-features-values.yaml"); fi

  step "helm lint --strict ($set values)"
  if ! "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" "${values[@]}" >"$work/lint.log" 2>&1; then
    cat "$work/lint.log" >&2
    die "helm lint --strict failed with the $set values"
  fi

  step "helm template ($set values)"
  if ! "$HELM" template orderflow "$CHART" --namespace orderflow --kube-version "$KUBE_VERSION" \
    "${values[@]}" >"$work/$set.yaml" 2>"$work/template.log"; then
    cat "$work/template.log" >&2
    die "helm template failed with the $set values"
  fi

  # Keeps the core kinds for kubernetes-validate; prints "<count> <skipped kinds>".
  split=$("$VENV/bin/python" - "$work/$set.yaml" "$work/$set.core.yaml" "$CRD_KINDS" <<'PY'
import sys
import yaml

crd_kinds = set(sys.argv[3].split())
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["kind"] not in crd_kinds]
with open(sys.argv[2], "w") as out:
    yaml.safe_dump_all(core, out, sort_keys=False)
print(len(core), ",".join(sorted(d["kind"] for d in docs if d["kind"] in crd_kinds)) or "none")
PY
  ) || die "the $set manifests are not valid YAML"
  read -r count skipped <<<"$split"
  step "kubernetes-validate --strict -k $KUBE_VERSION: $count manifests ($set values; CRD kinds left to check_chart.py: $skipped)"
  # --quiet prints only warnings and failures: with the CRD kinds removed, any output is a failure
  # (a missing schema, a deprecated API, an unknown or mistyped field).
  if ! out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$work/$set.core.yaml" 2>&1) ||
    [[ -n $out ]]; then
    printf '%s\n' "$out" >&2
    die "the $set manifests do not validate against Kubernetes $KUBE_VERSION"
  fi
  manifests=$((manifests + count))
done

step "Checking the rendered manifests, the values schema and the Dockerfile (tests/chart/check_chart.py)"
if ! summary=$("$VENV/bin/python" "$REPO_ROOT/tests/chart/check_chart.py" --helm "$HELM" --chart "$CHART"); then
  printf '%s\n' "$summary"
  die "tests/chart/check_chart.py found problems (listed above)"
fi
note "$summary"

step "Starting each binary with its rendered Deployment/Job configuration (--check-config)"
# One line per run, then "binaries: N passed, M failed" (the binaries must be built: make test
# runs cargo build first).
if ! binary_log=$("$VENV/bin/python" "$REPO_ROOT/tests/chart/check_binaries.py" --helm "$HELM" --chart "$CHART" \
  --target-dir "${CARGO_TARGET_DIR:-$REPO_ROOT/target}" 2>&1); then
  printf '%s\n' "$binary_log" >&2
  die "tests/chart/check_binaries.py: a binary refused the configuration the chart gives it, or is not built (listed above)"
fi
binaries=$(tail -n 1 <<<"$binary_log")
note "$binaries"

checks=${summary#chart checks: }
binaries=${binaries#binaries: }
echo "check-chart: OK in $((SECONDS - start)) s: shellcheck clean, helm lint --strict x2 clean," \
  "$manifests manifests valid on Kubernetes $KUBE_VERSION, ${checks%% passed*} chart checks passed," \
  "${binaries%% passed*} binary config checks passed"
