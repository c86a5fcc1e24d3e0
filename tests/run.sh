#!/usr/bin/env bash
# Runs berth's whole test suite. Installs the Debian packages the end-to-end tests drive
# (skopeo, busybox-static for a tiny image root filesystem) when they are missing and this
# runs as root; otherwise says what to install. The Docker tests need a running Docker
# daemon (`docker info`), as on CI.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
[ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "tests/run.sh: installing ${need[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "tests/run.sh: missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
fi

cargo fmt --all -- --check
cargo test --locked "$@"
