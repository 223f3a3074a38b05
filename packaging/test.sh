#!/usr/bin/env bash
# Builds and checks the hashi-supervisor packages. Must run as root on a
# Debian-like machine (it installs and purges the deb on this machine).
#
# usage: packaging/test.sh
# env:   HASHI_PACKAGING_REUSE=1  reuse packages already in target/packages
#                                 instead of running packaging/build.sh
#        HASHI_SUPERVISOR_NODE_TOML  passed on to build.sh
# Prints one line per check and ends with "packaging: N passed, N failed";
# exits non-zero when any check failed.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
here=$repo/packaging
out=${HASHI_PACKAGING_OUT:-$repo/target/packages}
started=$(date +%s)
passed=0
failed=0

say() { echo "packaging/test.sh: $*"; }
abort() {
    say "error: $*" >&2
    echo "packaging: $passed passed, $((failed + 1)) failed"
    exit 1
}
pass() {
    passed=$((passed + 1))
    echo "ok   - $1"
}
flunk() {
    failed=$((failed + 1))
    echo "FAIL - $1" >&2
    [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/       /' >&2
    return 0
}
# check DESCRIPTION COMMAND...: one check; output shown only on failure.
check() {
    local desc=$1 output
    shift
    if output=$("$@" 2>&1); then pass "$desc"; else flunk "$desc" "$output"; fi
}
# Asserts the mode, owner and group of PATH ("755 root root").
check_stat() {
    local want=$1 path=$2 got
    got=$(stat -c '%a %U %G' "$path" 2>&1)
    if [ "$got" = "$want" ]; then pass "$path is $want"; else flunk "$path is $want" "got: $got"; fi
}

[ "$(id -u)" = 0 ] || abort "run as root (installs the deb on this machine)"
command -v dpkg >/dev/null || abort "needs a Debian-like machine (dpkg)"

# --- tools --------------------------------------------------------------
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v rpm >/dev/null || need+=(rpm)
command -v rpmlint >/dev/null || need+=(rpmlint)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v objdump >/dev/null || need+=(binutils)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v adduser >/dev/null || need+=(adduser)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; } ||
        abort "failed to install ${need[*]}"
fi

# --- build ----------------------------------------------------------------
if [ "${HASHI_PACKAGING_REUSE:-0}" = 1 ]; then
    say "reusing packages in $out"
else
    rm -f "$out"/*.deb "$out"/*.rpm
    HASHI_PACKAGING_OUT=$out "$here/build.sh" || abort "packaging/build.sh failed"
fi
version=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="hashi-supervisor"][0])')
deb=$(ls "$out"/hashi-supervisor_"$version"-*_amd64.deb 2>/dev/null | head -n 1)
rpmf=$(ls "$out"/hashi-supervisor-"$version"-*.x86_64.rpm 2>/dev/null | head -n 1)
[ -f "$deb" ] || abort "no amd64 deb for $version in $out"
[ -f "$rpmf" ] || abort "no x86_64 rpm for $version in $out"
pass "built $(basename "$deb") and $(basename "$rpmf")"
build_done=$(date +%s)

# --- the binary runs on glibc 2.17 (CentOS 7) -------------------------------
bin=$out/supervisor-x86_64
glibc_ok() {
    if ! readelf -lW "$1" | grep -q INTERP && ! readelf -dW "$1" | grep -q NEEDED; then
        echo "static"
        return 0
    fi
    local max
    max=$(objdump -T "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    echo "dynamic, highest GLIBC_${max:-none}"
    [ -z "$max" ] || [ "$(printf '%s\n2.17\n' "$max" | sort -V | tail -n 1)" = 2.17 ]
}
check "packaged binary is static or needs glibc <= 2.17 ($(glibc_ok "$bin"))" glibc_ok "$bin"

# --- lintian ----------------------------------------------------------------
# The justified overrides ship in the deb (packaging/lintian-overrides).
lint_out=$(lintian --fail-on error --show-overrides "$deb" 2>&1)
if [ $? -eq 0 ]; then
    pass "lintian reports no errors"
    printf '%s\n' "$lint_out" | grep -E '^[WIEO]:' | sed 's/^/       lintian: /'
else
    flunk "lintian reports no errors" "$lint_out"
fi

# --- rpmlint ----------------------------------------------------------------
rpmlint_out=$(rpmlint -c "$here/rpmlint.toml" "$rpmf" 2>&1)
if [ $? -eq 0 ]; then
    pass "rpmlint reports no errors"
    printf '%s\n' "$rpmlint_out" | grep -E ': (W|E): ' | sed 's/^/       rpmlint: /'
else
    flunk "rpmlint reports no errors" "$rpmlint_out"
fi

# --- rpm: contents, scriptlets, format readable by rpm 4.11 ----------------
rq() { rpm -qp --nosignature "$@" "$rpmf" 2>/dev/null; }
files=$(rq -l)
for f in /usr/bin/supervisor /usr/lib/systemd/system/hashi-supervisor.service \
    /etc/hashi-supervisor/node.toml /etc/sysconfig/hashi-supervisor \
    /usr/share/bash-completion/completions/supervisor /usr/share/zsh/site-functions/_supervisor \
    /usr/share/fish/vendor_completions.d/supervisor.fish /usr/share/man/man1/supervisor.1.gz; do
    if grep -qx "$f" <<<"$files"; then pass "rpm lists $f"; else flunk "rpm lists $f" "$files"; fi
done
configs=$(rq --configfiles)
for f in /etc/hashi-supervisor/node.toml /etc/sysconfig/hashi-supervisor; do
    if grep -qx "$f" <<<"$configs"; then pass "rpm marks $f as config"; else flunk "rpm marks $f as config" "$configs"; fi
done
noreplace=$(rq --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' | grep '^/etc/hashi-supervisor/node.toml ')
if [[ "$noreplace" == *n* ]]; then pass "rpm node.toml is %config(noreplace)"; else flunk "rpm node.toml is %config(noreplace)" "$noreplace"; fi
scripts=$(rq --scripts)
for want in 'useradd -r' 'install -d -m 0755 -o root -g root /var/lib/hashi-supervisor' 'groupadd -r' 'try-restart hashi-supervisor.service' \
    'systemctl stop hashi-supervisor.service' '[ -d /run/systemd/system ]'; do
    if grep -qF -- "$want" <<<"$scripts"; then pass "rpm scriptlets contain '$want'"; else flunk "rpm scriptlets contain '$want'" "$scripts"; fi
done
if grep -qE 'systemctl (start|enable|restart) ' <<<"$scripts"; then
    flunk "rpm scriptlets never start, enable or restart unconditionally" "$scripts"
else
    pass "rpm scriptlets never start, enable or restart unconditionally"
fi
compressor=$(rq --qf '%{PAYLOADCOMPRESSOR}')
if [ "$compressor" = gzip ] || [ "$compressor" = xz ]; then pass "rpm payload is $compressor"; else flunk "rpm payload is gzip or xz" "got: $compressor"; fi
digest=$(rq --qf '%{FILEDIGESTALGO}')
if [ "$digest" = 8 ]; then pass "rpm file digests are SHA-256 (algo 8)"; else flunk "rpm file digests are SHA-256 (algo 8)" "got: $digest"; fi
# rpm 4.11 (CentOS 7) knows these rpmlib() features; zstd payloads,
# LargeFiles and rich dependencies came later.
rpmlib=$(rq --requires | grep -o '^rpmlib([A-Za-z]*)')
bad=$(grep -vxE 'rpmlib\((CompressedFileNames|FileDigests|PayloadFilesHavePrefix|PayloadIsXz|PayloadIsBzip2)\)' <<<"$rpmlib" || true)
if [ -z "$bad" ]; then pass "rpm needs only rpmlib features of rpm 4.11"; else flunk "rpm needs only rpmlib features of rpm 4.11" "$bad"; fi
check "rpm header and payload digests verify" rpm -K --nosignature "$rpmf"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
force=()
rpm --help 2>/dev/null | grep -q -- --force-debian && force=(--force-debian)
check "rpm installs into a scratch root" rpm --root "$scratch" -i --nodeps --noscripts "${force[@]}" "$rpmf"
for f in usr/bin/supervisor usr/lib/systemd/system/hashi-supervisor.service etc/sysconfig/hashi-supervisor \
    etc/hashi-supervisor/node.toml usr/share/man/man1/supervisor.1.gz; do
    check "rpm payload has /$f" test -s "$scratch/$f"
done
check_stat "755 root root" "$scratch/usr/bin/supervisor"
check_stat "640 root root" "$scratch/etc/hashi-supervisor/node.toml"
check "rpm unit reads /etc/sysconfig/hashi-supervisor" \
    grep -qx 'EnvironmentFile=-/etc/sysconfig/hashi-supervisor' "$scratch/usr/lib/systemd/system/hashi-supervisor.service"
check "rpm payload binary runs" "$scratch/usr/bin/supervisor" --version

# --- deb: install, check, remove, purge ---------------------------------------
if dpkg-query -W hashi-supervisor >/dev/null 2>&1; then
    say "purging a hashi-supervisor left installed before this test"
    dpkg -P hashi-supervisor >/dev/null
fi
check "dpkg -i installs the deb" dpkg -i "$deb"
check_stat "755 root root" /usr/bin/supervisor
check_stat "644 root root" /usr/lib/systemd/system/hashi-supervisor.service
check_stat "640 root root" /etc/hashi-supervisor/node.toml
check_stat "644 root root" /etc/default/hashi-supervisor
check_stat "755 root root" /var/lib/hashi-supervisor
check_stat "755 root root" /var/lib/hashi-supervisor/releases
for f in /usr/share/bash-completion/completions/supervisor /usr/share/zsh/vendor-completions/_supervisor \
    /usr/share/fish/vendor_completions.d/supervisor.fish; do
    check "deb installs $f" test -s "$f"
done
check "man page is a valid gzip roff page" sh -c 'gzip -dc /usr/share/man/man1/supervisor.1.gz | grep -q "^\.TH supervisor 1"'
conffiles=$(dpkg-query -W -f='${Conffiles}\n' hashi-supervisor)
for f in /etc/hashi-supervisor/node.toml /etc/default/hashi-supervisor; do
    if grep -q " $f " <<<"$conffiles"; then pass "deb conffile $f"; else flunk "deb conffile $f" "$conffiles"; fi
done
check "deb unit reads /etc/default/hashi-supervisor" \
    grep -qx 'EnvironmentFile=-/etc/default/hashi-supervisor' /usr/lib/systemd/system/hashi-supervisor.service
for u in consul nomad; do
    check "system user $u exists" getent passwd "$u"
    check "system group $u exists" getent group "$u"
    uid=$(id -u "$u" 2>/dev/null || echo 99999)
    if [ "$uid" -lt 1000 ]; then pass "$u is a system uid ($uid)"; else flunk "$u is a system uid" "uid $uid"; fi
done
ver_out=$(supervisor --version 2>&1)
if [ "$ver_out" = "supervisor $version" ]; then pass "supervisor --version prints $version"; else flunk "supervisor --version prints $version" "$ver_out"; fi

# `supervisor check --role dev` is the role/plan work's; until it is merged
# the skeleton's `check` fails with exactly this message, and only that
# failure is tolerated (reported as SKIP, not as a pass).
skeleton_check='`check` is not built yet'
if check_out=$(supervisor check --role dev 2>&1); then
    pass "supervisor check --role dev"
elif grep -qF "$skeleton_check" <<<"$check_out"; then
    echo "SKIP - supervisor check --role dev: the command is still the skeleton ($skeleton_check)"
else
    flunk "supervisor check --role dev" "$check_out"
fi

verify_out=$(systemd-analyze verify /usr/lib/systemd/system/hashi-supervisor.service 2>&1)
verify_rc=$?
if [ $verify_rc -eq 0 ] && ! grep -q 'hashi-supervisor.service' <<<"$verify_out"; then
    pass "systemd-analyze verify accepts the unit"
else
    flunk "systemd-analyze verify accepts the unit" "$verify_out"
fi

# --- maintainer scripts: which systemctl calls, with and without systemd ---
# Each script from the built packages runs in a private mount namespace with
# an empty /run (plus /run/systemd/system when "systemd" is up), with
# systemctl and deb-systemd-invoke replaced by fakes that log their args.
fake=$scratch/fakebin
mkdir -p "$fake" "$scratch/deb-control"
for tool in systemctl deb-systemd-invoke; do
    printf '#!/bin/sh\necho "%s $*" >>"$FAKE_LOG"\n' "$tool" >"$fake/$tool"
    chmod 755 "$fake/$tool"
done
dpkg-deb -e "$deb" "$scratch/deb-control"
for tag in PREIN POSTIN PREUN POSTUN; do
    rpm -qp --nosignature --qf "%{$tag}" "$rpmf" >"$scratch/rpm-$tag" 2>/dev/null
done
# calls SYSTEMD(up|down) SCRIPT ARGS...: prints the logged calls, one a line,
# then "exit N" when the script failed.
calls() {
    local up=$1 log=$scratch/calls rc=0
    shift
    : >"$log"
    FAKE_LOG=$log PATH=$fake:$PATH SYSTEMD_UP=$up unshare --mount --propagation private sh -c '
        mount -t tmpfs tmpfs /run || exit 99
        [ "$SYSTEMD_UP" = up ] && mkdir -p /run/systemd/system
        exec sh "$@"' sh "$@" >/dev/null 2>&1 || rc=$?
    cat "$log"
    [ "$rc" -eq 0 ] || echo "exit $rc"
}
# expect_calls DESCRIPTION EXPECTED SYSTEMD SCRIPT ARGS...
expect_calls() {
    local desc=$1 want=$2 got
    shift 2
    got=$(calls "$@")
    if [ "$got" = "$want" ]; then pass "$desc"; else flunk "$desc" "want: [$want]"$'\n'"got:  [$got]"; fi
}
U=hashi-supervisor.service
dc=$scratch/deb-control
expect_calls "deb postinst first install only reloads units" "systemctl daemon-reload" up "$dc/postinst" configure ""
expect_calls "deb postinst upgrade try-restarts" "systemctl daemon-reload"$'\n'"deb-systemd-invoke try-restart $U" up "$dc/postinst" configure 0.0.1
expect_calls "deb postinst without systemd calls nothing" "" down "$dc/postinst" configure 0.0.1
expect_calls "deb prerm remove stops the service" "deb-systemd-invoke stop $U" up "$dc/prerm" remove
expect_calls "deb prerm upgrade leaves it running" "" up "$dc/prerm" upgrade 0.2.0
expect_calls "deb prerm without systemd calls nothing" "" down "$dc/prerm" remove
expect_calls "deb postrm remove reloads units" "systemctl daemon-reload" up "$dc/postrm" remove
expect_calls "rpm %pre with existing users succeeds" "" up "$scratch/rpm-PREIN" 1
expect_calls "rpm %post install only reloads units" "systemctl daemon-reload" up "$scratch/rpm-POSTIN" 1
expect_calls "rpm %post without systemd calls nothing" "" down "$scratch/rpm-POSTIN" 1
expect_calls "rpm %preun upgrade leaves it running" "" up "$scratch/rpm-PREUN" 1
expect_calls "rpm %preun erase disables and stops" "systemctl --no-reload disable $U"$'\n'"systemctl stop $U" up "$scratch/rpm-PREUN" 0
expect_calls "rpm %preun without systemd calls nothing" "" down "$scratch/rpm-PREUN" 0
expect_calls "rpm %postun upgrade try-restarts" "systemctl daemon-reload"$'\n'"systemctl try-restart $U" up "$scratch/rpm-POSTUN" 1
expect_calls "rpm %postun erase only reloads units" "systemctl daemon-reload" up "$scratch/rpm-POSTUN" 0
expect_calls "rpm %postun without systemd calls nothing" "" down "$scratch/rpm-POSTUN" 1

check "bash completion parses" bash -n /usr/share/bash-completion/completions/supervisor
# The rpm's unit differs only in its EnvironmentFile; the binary it names
# exists now that the deb is installed.
rpm_unit_out=$(systemd-analyze verify "$scratch/usr/lib/systemd/system/hashi-supervisor.service" 2>&1)
if [ $? -eq 0 ] && ! grep -q 'hashi-supervisor.service' <<<"$rpm_unit_out"; then
    pass "systemd-analyze verify accepts the rpm's unit"
else
    flunk "systemd-analyze verify accepts the rpm's unit" "$rpm_unit_out"
fi

# A second install is an upgrade: users exist, the scripts must not fail.
check "reinstalling the deb (upgrade path) succeeds" dpkg -i "$deb"

# State the supervisor would have made, to see what removal keeps.
mkdir -p /var/lib/hashi-supervisor/releases/consul
echo 'schema = 1 # edited' >>/etc/hashi-supervisor/node.toml
check "dpkg -r removes the package" dpkg -r hashi-supervisor
check "dpkg -r removes /usr/bin/supervisor" test ! -e /usr/bin/supervisor
check "dpkg -r removes the unit" test ! -e /usr/lib/systemd/system/hashi-supervisor.service
check "dpkg -r keeps the edited role file" grep -q 'edited' /etc/hashi-supervisor/node.toml
check "dpkg -r keeps /etc/default/hashi-supervisor" test -f /etc/default/hashi-supervisor
check "dpkg -r keeps the state dir" test -d /var/lib/hashi-supervisor/releases/consul
state=$(dpkg-query -W -f='${db:Status-Status}' hashi-supervisor 2>&1)
if [ "$state" = config-files ]; then pass "after dpkg -r the package is in config-files state"; else flunk "package in config-files state" "$state"; fi
check "dpkg -P purges the package" dpkg -P hashi-supervisor
check "dpkg -P removes /etc/hashi-supervisor" test ! -e /etc/hashi-supervisor
check "dpkg -P removes /etc/default/hashi-supervisor" test ! -e /etc/default/hashi-supervisor
check "dpkg -P removes /var/lib/hashi-supervisor" test ! -e /var/lib/hashi-supervisor
check "dpkg -P keeps the consul user (files it owns may remain)" getent passwd consul
if dpkg-query -W hashi-supervisor >/dev/null 2>&1; then
    flunk "dpkg no longer knows the package" "$(dpkg-query -W hashi-supervisor)"
else
    pass "dpkg no longer knows the package"
fi

ended=$(date +%s)
say "build $((build_done - started)) s, checks $((ended - build_done)) s, total $((ended - started)) s"
echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
