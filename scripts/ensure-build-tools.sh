#!/usr/bin/env bash
# Makes sure the C toolchain that -sys crates (librdkafka, sqlite) build with is installed.
source "$(dirname "$0")/lib.sh"

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
# librdkafka links the system OpenSSL (TLS and SASL/SCRAM to Kafka).
[[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (rustup, stable ≥ 1.85) first"
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
