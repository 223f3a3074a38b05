#!/usr/bin/env bash
# Generates the packages' derived files into OUT_DIR from the built binary
# and the templates here: the systemd unit for deb and rpm (they differ only
# in their EnvironmentFile), shell completions and the man page (both from
# the binary's clap definitions, so they never drift from the real CLI), and
# the staged default role file and a stripped copy of the binary. The
# package metadata in Cargo.toml takes every file from OUT_DIR or packaging/.
#
# usage: packaging/gen-assets.sh SUPERVISOR_BINARY OUT_DIR NODE_TOML
# env:   STRIP    the strip program for the binary's arch (default: strip)
#        GEN_BIN  a binary of the same source runnable here, to print the
#                 completions and man page (default: SUPERVISOR_BINARY)
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 SUPERVISOR_BINARY OUT_DIR NODE_TOML" >&2
    exit 64
fi
bin=$1
out=$2
node_toml=$3
gen=${GEN_BIN:-$bin}
here=$(cd "$(dirname "$0")" && pwd)

rm -rf "$out"
mkdir -p "$out/deb" "$out/rpm" "$out/completions" "$out/man"

render_unit() { # ENV_FILE DEST
    sed "s|@ENV_FILE@|$1|g" "$here/systemd/hashi-supervisor.service.in" >"$2"
    if grep -q '@[A-Z_]*@' "$2"; then
        echo "error: unsubstituted placeholder left in $2" >&2
        exit 1
    fi
}
render_unit /etc/default/hashi-supervisor "$out/deb/hashi-supervisor.service"
render_unit /etc/sysconfig/hashi-supervisor "$out/rpm/hashi-supervisor.service"

"${STRIP:-strip}" -o "$out/supervisor" "$bin"
chmod 0755 "$out/supervisor"

"$gen" completions bash >"$out/completions/supervisor.bash"
"$gen" completions zsh >"$out/completions/_supervisor"
"$gen" completions fish >"$out/completions/supervisor.fish"
"$gen" completions man >"$out/man/hashi-supervisor.1"
# -n: no name or timestamp in the header, so the package is reproducible.
gzip -9n -f "$out/man/hashi-supervisor.1"

cp "$node_toml" "$out/node.toml"

# Debian changelog for this version (cargo-deb gzips it into the deb); dated
# by the last commit so rebuilding the same commit gives the same file.
version=$("$gen" --version | sed -n 's/^supervisor //p')
[ -n "$version" ] || { echo "error: cannot read the version from $gen --version" >&2; exit 1; }
date=$(git -C "$here" log -1 --format=%cD 2>/dev/null || date -R)
cat >"$out/changelog.Debian" <<CHANGELOG
hashi-supervisor ($version-1) unstable; urgency=medium

  * Release $version, built from the hashi-supervisor sources.

 -- hashi-supervisor maintainers <maintainers@hashi-supervisor.example.org>  $date
CHANGELOG
