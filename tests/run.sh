#!/usr/bin/env bash
# Runs berth's whole test suite: formatting, clippy, then every test. Installs the Debian
# packages the end-to-end tests drive when they are missing and this runs as root (otherwise
# says what to install): skopeo and podman (registry clients), containerd's ctr, busybox-static
# (a tiny image root filesystem), pebble (an ACME CA), nginx (a reverse proxy), openssl, curl,
# python3 (its sqlite3 module holds a database lock from outside), docker-registry (registry:2,
# whose storage `berth import` adopts), apache2-utils (htpasswd files to import), shellcheck
# (install.sh), mmdebstrap and python3-venv (the installer test boots a Debian image it builds,
# with release binaries built by tests/release.sh, which puts zig from PyPI in a venv),
# chromium and chromium-driver (the web UI's browser test, with Selenium from PyPI). The
# Docker tests need a running Docker daemon (`docker info`), as on CI; the ctr test uses that
# daemon's containerd.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v podman >/dev/null 2>&1 || need+=(podman)
[ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v pebble >/dev/null 2>&1 || need+=(pebble)
[ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ctr >/dev/null 2>&1 || need+=(containerd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "tests/run.sh: installing ${need[*]}" >&2
        # Packages only: no service (nginx on :80, say) is started by the install.
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "tests/run.sh: missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
fi

# The browser test's Python side: Selenium (pinned) in a venv of its own, driving Debian's
# chromium through its chromedriver (no browser download).
if ! target/ui-venv/bin/python -c 'import selenium' >/dev/null 2>&1; then
    python3 -m venv target/ui-venv
    target/ui-venv/bin/pip install --quiet 'selenium==4.51.0'
fi

shellcheck install.sh tests/*.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# The binary the README's first command runs (`cargo run -- serve`): the tests' dependencies
# unify some features differently, so it is built on its own, and that command then starts
# at once.
cargo build --locked
cargo test --locked "$@"
