#!/usr/bin/env bash
# Builds the hashi-supervisor .deb and .rpm: a static musl release binary
# (runs on CentOS 7's glibc 2.17 and anything newer), the derived assets
# (packaging/gen-assets.sh), then cargo-deb and cargo-generate-rpm. Installs
# the tools it needs when missing (rustup target, musl-tools via apt,
# cargo-deb and cargo-generate-rpm via `cargo install --locked`).
#
# usage: packaging/build.sh
# env:   HASHI_SUPERVISOR_NODE_TOML  default role file to ship
#                                    (default: config/node.toml)
#        HASHI_PACKAGING_OUT         output dir (default: target/packages)
#        HASHI_PACKAGING_GLIBC=1     build against glibc instead of musl
# Packages land in the output dir; the packaged binary of each arch is
# copied there too as supervisor-<arch> for the checks in test.sh.
#
# When no musl build is possible (rustup cannot add the target, e.g. offline,
# or there is no musl C compiler) the script falls back to a glibc build for
# the host arch. Such a binary needs the build host's glibc: on a host newer
# than CentOS 7 it does not run there. The packages are still built (they
# install on the build host's distribution), the reason is written to
# <output dir>/glibc-fallback-<arch>.txt, and test.sh reports the glibc
# check as skipped with that reason. With HASHI_PACKAGING_GLIBC=1 (a build
# host with glibc <= 2.17) a binary that needs more is an error.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

die() {
    echo "packaging/build.sh: error: $*" >&2
    exit 1
}
say() { echo "packaging/build.sh: $*" >&2; }

# Highest glibc symbol version the packages may require (CentOS 7).
MAX_GLIBC=2.17

node_toml=${HASHI_SUPERVISOR_NODE_TOML:-config/node.toml}
[ -f "$node_toml" ] ||
    die "default role file $node_toml is missing (the package ships it as /etc/hashi-supervisor/node.toml; set HASHI_SUPERVISOR_NODE_TOML to ship another file)"

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
[ "$target_dir" = "$repo/target" ] ||
    die "the package metadata expects the target dir at $repo/target, not $target_dir (unset CARGO_TARGET_DIR)"
out=${HASHI_PACKAGING_OUT:-$repo/target/packages}
assets=$repo/target/packaging-assets
mkdir -p "$out"

# The packaging tools' versions this metadata is written and checked
# against; installed when missing (an installed other version is used as is).
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
have_cargo_subcommand() { cargo "$1" --version >/dev/null 2>&1; }
for tool in deb@$CARGO_DEB_VERSION generate-rpm@$CARGO_GENERATE_RPM_VERSION; do
    if ! have_cargo_subcommand "${tool%@*}"; then
        say "installing cargo-$tool"
        cargo install --locked "cargo-$tool"
    fi
done

# Prints the target triple to build for ARCH (x86_64 or aarch64), installing
# what a musl build needs; returns 1 (with a reason on stderr) if it can't.
prepare_target() {
    local arch=$1 triple cc
    if [ "${HASHI_PACKAGING_GLIBC:-0}" = 1 ]; then
        [ "$arch" = "$(uname -m)" ] || { say "glibc build only for the host arch"; return 1; }
        echo "$arch-unknown-linux-gnu"
        return 0
    fi
    triple=$arch-unknown-linux-musl
    if ! rustup target list --installed | grep -qx "$triple"; then
        rustup target add "$triple" >&2 || { say "rustup cannot add $triple"; return 1; }
    fi
    # ring (rustls) compiles C and assembly: it needs a C compiler for musl.
    if [ "$arch" = x86_64 ]; then
        cc=musl-gcc
        if ! command -v "$cc" >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -q musl-tools >&2 || { apt-get update -q >&2 && apt-get install -y -q musl-tools >&2; } || true
        fi
    else
        cc=$arch-linux-musl-gcc
    fi
    command -v "$cc" >/dev/null || { say "no C compiler $cc for $triple"; return 1; }
    echo "$triple"
}

# Returns 1 (saying why) unless BINARY is static or needs at most glibc
# $MAX_GLIBC.
check_glibc() {
    local bin=$1 max
    if ! readelf -lW "$bin" | grep -q 'INTERP' && ! readelf -dW "$bin" | grep -q 'NEEDED'; then
        say "$bin is static: no glibc requirement"
        return 0
    fi
    max=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    say "$bin is dynamic; highest GLIBC symbol version: ${max:-none}"
    if [ -n "$max" ] && [ "$(printf '%s\n%s\n' "$max" "$MAX_GLIBC" | sort -V | tail -n 1)" != "$MAX_GLIBC" ]; then
        say "$bin needs GLIBC_$max, newer than CentOS 7's $MAX_GLIBC"
        return 1
    fi
}

# The strip that understands ARCH's binaries.
strip_for() {
    if [ "$1" = "$(uname -m)" ]; then echo strip; else echo "$1-linux-musl-strip"; fi
}

build_arch() {
    local arch=$1 triple bin fallback=
    rm -f "$out/glibc-fallback-$arch.txt"
    if ! triple=$(prepare_target "$arch" 2>"$out/.prepare-$arch.log"); then
        cat "$out/.prepare-$arch.log" >&2
        [ "$arch" = "$(uname -m)" ] || die "cannot build for $arch"
        triple=$arch-unknown-linux-gnu
        fallback="no static musl build possible here ($(grep '^packaging/build.sh: ' "$out/.prepare-$arch.log" | tail -n 1 | sed 's/^packaging\/build.sh: //'))"
        say "warning: $fallback; falling back to $triple (checked against glibc $MAX_GLIBC)"
    else
        cat "$out/.prepare-$arch.log" >&2
    fi
    rm -f "$out/.prepare-$arch.log"
    say "building supervisor for $triple"
    CC_x86_64_unknown_linux_musl=musl-gcc \
        CC_aarch64_unknown_linux_musl=aarch64-linux-musl-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-musl-gcc \
        cargo build --release --locked --target "$triple" --bin supervisor
    bin=$repo/target/$triple/release/supervisor
    if ! check_glibc "$bin"; then
        [ -n "$fallback" ] || die "$bin does not run on CentOS 7"
        say "warning: the $arch packages will not run on CentOS 7: $fallback"
        printf '%s; %s\n' "$fallback" "the glibc build needs more than glibc $MAX_GLIBC" >"$out/glibc-fallback-$arch.txt"
    fi

    # Completions and the man page come from a binary that runs here.
    STRIP=$(strip_for "$arch") GEN_BIN=${host_bin:-$bin} \
        packaging/gen-assets.sh "$bin" "$assets" "$node_toml"
    cp "$assets/supervisor" "$out/supervisor-$arch"
    say "packaging deb for $triple"
    cargo deb --no-build --no-strip --target "$triple" --output "$out/"
    say "packaging rpm for $triple"
    # gzip payload: CentOS 7's rpm 4.11 reads gzip and xz, not zstd.
    cargo generate-rpm --target "$triple" --payload-compress gzip --output "$out/"
}

[ "$(uname -m)" = x86_64 ] || die "packages are built on an x86_64 host"
# Called plainly, not in an `||` list, so `set -e` stays in force inside.
build_arch x86_64
host_bin=$out/supervisor-x86_64
if command -v aarch64-linux-musl-gcc >/dev/null; then
    build_arch aarch64
else
    say "skipping aarch64: no aarch64-linux-musl-gcc cross compiler here"
fi

say "packages in $out:"
ls -1 "$out"/*.deb "$out"/*.rpm >&2
