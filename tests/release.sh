#!/usr/bin/env bash
# Builds berth's release artifacts into OUT_DIR: `berth-x86_64-linux`, a release binary that
# runs on glibc 2.31 and newer (Debian 11 and 12, Ubuntu 22.04 and 24.04), and `SHA256SUMS`.
#
#   tests/release.sh OUT_DIR [VERSION]
#
# VERSION (default: the crate's) is what `berth --version` reports. The binary is linked by
# cargo-zigbuild against glibc 2.31 with zig from PyPI (`ziglang`, in a venv under target/);
# both are installed on first use. install.sh downloads these two files from
# <base-url>/<version>/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tests/release.sh OUT_DIR [VERSION]}
version=${2:-}

venv=target/zig-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m ziglang version >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q ziglang
fi
if ! command -v cargo-zigbuild >/dev/null 2>&1; then
    cargo install --locked cargo-zigbuild
fi
# cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on the PATH: the venv's.
export PATH="$PWD/$venv/bin:$PATH"

target=x86_64-unknown-linux-gnu
if [ -n "$version" ]; then
    export BERTH_VERSION="$version"
fi
# A target folder of its own: no lock shared with a `cargo test` that runs this script.
cargo zigbuild --locked --release --target "$target.2.31" --bin berth --target-dir target/dist-build

mkdir -p "$out"
cp "target/dist-build/$target/release/berth" "$out/berth-x86_64-linux.tmp"
mv -f "$out/berth-x86_64-linux.tmp" "$out/berth-x86_64-linux"
(cd "$out" && sha256sum berth-x86_64-linux >SHA256SUMS)
echo "release: $out/berth-x86_64-linux ($("$out/berth-x86_64-linux" --version))"
