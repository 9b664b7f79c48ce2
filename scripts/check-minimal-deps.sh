#!/usr/bin/env bash
# Fails if the minimal builds of the umbrella crate pull NATS, AES or HTTP
# crates. Run from the workspace root (CI runs it on every change):
#
#   scripts/check-minimal-deps.sh
#
# Checked: `--no-default-features` and the default features. Only normal
# dependencies count (dev-dependencies are not linked into users' builds).
set -euo pipefail

forbidden='^(async-nats|nats|aes|aes-gcm|aead|ring|rustls|reqwest|hyper|hyper-util|h2|http|tower|axum|cloudevents-sdk)$'
status=0

check() {
    local label="$1"; shift
    local tree
    if ! tree="$(cargo tree -p "${PKG:-a3s-event}" --edges normal --prefix none --format '{p}' "$@")"; then
        echo "error: cargo tree failed ($label)" >&2
        exit 2
    fi
    local hits
    hits="$(printf '%s\n' "$tree" | awk '{print $1}' | sort -u | grep -E "$forbidden" || true)"
    if [[ -n "$hits" ]]; then
        echo "FAIL ($label): the minimal build links forbidden crates:" >&2
        printf '  %s\n' $hits >&2
        status=1
    else
        echo "ok ($label): $(printf '%s\n' "$tree" | awk '{print $1}' | sort -u | wc -l) crates, no NATS/AES/HTTP"
    fi
}

check "no default features" --no-default-features
check "default features"
# event-routing links HTTP crates only behind its `http` feature.
PKG=event-routing check "event-routing default features"

exit "$status"
