#!/usr/bin/env bash
# Makes sure the C toolchain that -sys crates (librdkafka, sqlite) build with is installed.
source "$(dirname "$0")/lib.sh"

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (rustup, stable ≥ 1.85) first"
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
