#!/usr/bin/env bash
# Builds and checks the hashi-supervisor packages. Must run as root on a
# Debian-like machine (it installs and purges the deb on this machine).
#
# usage: packaging/test.sh
# env:   HASHI_PACKAGING_REUSE=1  reuse packages already in target/packages
#                                 instead of running packaging/build.sh
#        HASHI_SUPERVISOR_NODE_TOML  passed on to build.sh
# Prints one line per check and ends with
# "packaging: N passed, N failed, N skipped"; exits non-zero when any check
# failed. A check is skipped only for a stated reason that lies outside the
# package (e.g. no musl toolchain on this machine); a skip is never a pass.
#
# Debian's `supervisor` package (supervisord) is installed for the
# coexistence checks if it is missing, with service starts denied, and
# purged again at the end.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
here=$repo/packaging
out=${HASHI_PACKAGING_OUT:-$repo/target/packages}
started=$(date +%s)
passed=0
failed=0
skipped=0

say() { echo "packaging/test.sh: $*"; }
abort() {
    say "error: $*" >&2
    echo "packaging: $passed passed, $((failed + 1)) failed, $skipped skipped"
    exit 1
}
pass() {
    passed=$((passed + 1))
    echo "ok   - $1"
}
skip() {
    skipped=$((skipped + 1))
    echo "SKIP - $1: $2"
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
command -v python3 >/dev/null || need+=(python3)
command -v lexgrog >/dev/null || need+=(man-db)
command -v unshare >/dev/null || need+=(util-linux)
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
glibc_desc="packaged binary is static or needs glibc <= 2.17 ($(glibc_ok "$bin"))"
if glibc_ok "$bin" >/dev/null; then
    pass "$glibc_desc"
elif [ -f "$out/glibc-fallback-x86_64.txt" ]; then
    # build.sh could not build with musl here and said why.
    skip "$glibc_desc" "$(cat "$out/glibc-fallback-x86_64.txt")"
else
    flunk "$glibc_desc"
fi

# (The packaged binary's memory once a node is steady is checked by
# benches/supervise/memory_gate.py, run by .ci/run after this script.)

# --- lintian ----------------------------------------------------------------
# The justified overrides ship in the deb (packaging/lintian-overrides).
# Warnings fail too: each accepted one is overridden there with its reason.
# (Not with --show-overrides: lintian 2.116 then fails on overridden tags.)
lint_out=$(lintian --fail-on error,warning "$deb" 2>&1)
if [ $? -eq 0 ]; then
    pass "lintian reports no errors and no unjustified warnings"
    printf '%s\n' "$lint_out" | grep -E '^[WIEO]:' | sed 's/^/       lintian: /'
    grep -E '^hashi-supervisor: ' "$here/lintian-overrides" | sed 's/^/       lintian: overridden: /'
else
    flunk "lintian reports no errors and no unjustified warnings" "$lint_out"
fi

# --- rpmlint ----------------------------------------------------------------
# Warnings fail too: each accepted one is filtered there with its reason.
rpmlint_out=$(rpmlint -c "$here/rpmlint.toml" "$rpmf" 2>&1)
if [ $? -eq 0 ] && ! grep -qE ': (W|E): ' <<<"$rpmlint_out"; then
    pass "rpmlint reports no errors and no unjustified warnings"
else
    flunk "rpmlint reports no errors and no unjustified warnings" "$rpmlint_out"
fi

# --- rpm: contents, scriptlets, format readable by rpm 4.11 ----------------
rq() { rpm -qp --nosignature "$@" "$rpmf" 2>/dev/null; }
files=$(rq -l)
for f in /usr/bin/supervisor /usr/lib/systemd/system/hashi-supervisor.service \
    /etc/hashi-supervisor/node.toml /etc/sysconfig/hashi-supervisor \
    /usr/share/bash-completion/completions/supervisor /usr/share/zsh/site-functions/_supervisor \
    /usr/share/fish/vendor_completions.d/supervisor.fish /usr/share/man/man1/hashi-supervisor.1.gz; do
    if grep -qx "$f" <<<"$files"; then pass "rpm lists $f"; else flunk "rpm lists $f" "$files"; fi
done
# firewalld service definitions (CentOS 7), shipped but not enabled: each
# is listed, well-formed XML, and opens exactly the agents' ports.
for svc in hashi-consul hashi-nomad hashi-supervisor; do
    f=/usr/lib/firewalld/services/$svc.xml
    if grep -qx "$f" <<<"$files"; then pass "rpm lists $f"; else flunk "rpm lists $f" "$files"; fi
done
if grep -q firewall-cmd <<<"$(rq --scripts)"; then flunk "rpm scriptlets never enable a firewalld service" "$(rq --scripts)"; else pass "rpm scriptlets never enable a firewalld service"; fi
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
    etc/hashi-supervisor/node.toml usr/share/man/man1/hashi-supervisor.1.gz; do
    check "rpm payload has /$f" test -s "$scratch/$f"
done
check_stat "755 root root" "$scratch/usr/bin/supervisor"
check_stat "640 root root" "$scratch/etc/hashi-supervisor/node.toml"
check "rpm unit reads /etc/sysconfig/hashi-supervisor" \
    grep -qx 'EnvironmentFile=-/etc/sysconfig/hashi-supervisor' "$scratch/usr/lib/systemd/system/hashi-supervisor.service"
check "rpm payload binary runs" "$scratch/usr/bin/supervisor" --version
fw_ports() {
    python3 -c 'import sys, xml.etree.ElementTree as E
r = E.parse(sys.argv[1]).getroot()
assert r.tag == "service" and r.findtext("short"), "not a firewalld service"
print(" ".join(sorted(p.get("port") + "/" + p.get("protocol") for p in r.iter("port"))))' "$1"
}
for want in "hashi-consul:8300/tcp 8301/tcp 8301/udp 8302/tcp 8302/udp 8500/tcp 8600/tcp 8600/udp" \
    "hashi-nomad:4646/tcp 4647/tcp 4648/tcp 4648/udp" "hashi-supervisor:4680/tcp"; do
    svc=${want%%:*}
    got=$(fw_ports "$scratch/usr/lib/firewalld/services/$svc.xml" 2>&1)
    if [ "$got" = "${want#*:}" ]; then pass "$svc.xml is well-formed and opens ${want#*:}"; else flunk "$svc.xml is well-formed and opens ${want#*:}" "$got"; fi
done

# --- coexistence with supervisord's packages ------------------------------------
# Debian's `supervisor` package and EPEL's `supervisor` rpm (supervisord) are
# common on the hosts this package goes to. Our package must install next to
# them: no path of ours may be one of theirs. That is why the man page is
# hashi-supervisor(1): Debian's package ships supervisor(1).
# Debian's file list comes from the installed package; EPEL's supervisor
# (CentOS 7) ships no man pages, and these files besides its python modules:
EPEL_SUPERVISOR_FILES="/usr/bin/supervisord /usr/bin/supervisorctl /usr/bin/echo_supervisord_conf
/usr/bin/pidproxy /etc/supervisord.conf /etc/logrotate.d/supervisor
/usr/lib/systemd/system/supervisord.service /usr/lib/tmpfiles.d/supervisor.conf"
supervisord_installed_here=0
supervisord_status() { dpkg-query -W -f='${db:Status-Status}' supervisor 2>/dev/null; }
if [ "$(supervisord_status)" != installed ]; then
    say "installing Debian's supervisor package for the coexistence checks"
    # Deny service starts while it installs (invoke-rc.d and
    # deb-systemd-invoke honour policy-rc.d): supervisord must not run here.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends supervisor >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends supervisor >/dev/null; }
    [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
    supervisord_installed_here=1
fi
if [ "$(supervisord_status)" = installed ]; then
    pass "Debian's supervisor package is installed ($(dpkg-query -W -f='${Version}' supervisor))"
else
    flunk "Debian's supervisor package is installed" "apt-get install supervisor failed; status: $(supervisord_status)"
fi
their_files=$(
    dpkg-query -L supervisor 2>/dev/null | while IFS= read -r p; do [ -d "$p" ] || echo "$p"; done
    echo "$EPEL_SUPERVISOR_FILES"
)
# Non-directory paths in the deb and the rpm.
our_deb_files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|')
our_rpm_files=$(rq --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' | awk '$1 !~ /^d/ {print $2}')
for pkg in deb rpm; do
    ours=our_${pkg}_files
    shared=$(comm -12 <(sort -u <<<"${!ours}") <(sort -u <<<"$their_files"))
    if [ -z "${!ours}" ]; then
        flunk "the $pkg lists its files" "empty file list"
    elif [ -z "$shared" ]; then
        pass "the $pkg shares no path with Debian's or EPEL's supervisor package"
    else
        flunk "the $pkg shares no path with Debian's or EPEL's supervisor package" "$shared"
    fi
done

# --- deb: install, check, remove, purge ---------------------------------------
if dpkg-query -W hashi-supervisor >/dev/null 2>&1; then
    say "purging a hashi-supervisor left installed before this test"
    dpkg -P hashi-supervisor >/dev/null
fi
check "dpkg -i installs the deb next to Debian's supervisor package" dpkg -i "$deb"
owner=$(dpkg -S /usr/share/man/man1/supervisor.1.gz 2>&1)
if [ "$owner" = "supervisor: /usr/share/man/man1/supervisor.1.gz" ]; then
    pass "supervisor(1) still belongs to Debian's supervisor package"
else
    flunk "supervisor(1) still belongs to Debian's supervisor package" "$owner"
fi
owner=$(dpkg -S /usr/bin/supervisor 2>&1)
if [ "$owner" = "hashi-supervisor: /usr/bin/supervisor" ]; then pass "/usr/bin/supervisor belongs to hashi-supervisor"; else flunk "/usr/bin/supervisor belongs to hashi-supervisor" "$owner"; fi
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
# The page as packaged (dpkg path-exclude rules, e.g. in slim container
# images, may keep it off the disk).
debroot=$scratch/deb-root
mkdir -p "$debroot"
dpkg-deb -x "$deb" "$debroot"
page=$debroot/usr/share/man/man1/hashi-supervisor.1.gz
check "man page hashi-supervisor(1) is a gzip roff page titled hashi-supervisor" \
    sh -c 'gzip -dc "$1" | grep -q "^\.TH hashi-supervisor 1 "' sh "$page"
whatis=$(lexgrog "$page" 2>&1)
if grep -qF ': "hashi-supervisor - ' <<<"$whatis" && grep -qF ': "supervisor - ' <<<"$whatis"; then
    pass "man page NAME lists hashi-supervisor and supervisor"
else
    flunk "man page NAME lists hashi-supervisor and supervisor" "$whatis"
fi
if grep -rqs '^path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
    skip "man finds the installed pages" "dpkg excludes /usr/share/man on this machine (/etc/dpkg/dpkg.cfg.d)"
else
    check "man hashi-supervisor finds ours" test "$(man -w hashi-supervisor 2>&1)" = /usr/share/man/man1/hashi-supervisor.1.gz
    check "man supervisor still finds Debian's supervisor(1)" test "$(man -w supervisor 2>&1)" = /usr/share/man/man1/supervisor.1.gz
fi
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

check "supervisor check --role dev" supervisor check --role dev

# --- the unit -----------------------------------------------------------------
unit=/usr/lib/systemd/system/hashi-supervisor.service
# unit_line LINE: the unit has exactly this line.
unit_line() {
    if grep -qxF -- "$1" "$unit"; then pass "unit: $1"; else flunk "unit: $1" "$(grep -v '^#' "$unit")"; fi
}
for line in 'Type=notify' 'NotifyAccess=main' \
    'ExecStartPre=/usr/bin/supervisor check $SUPERVISOR_ARGS' \
    'ExecStart=/usr/bin/supervisor run $SUPERVISOR_ARGS' \
    'ExecReload=/usr/bin/supervisor check $SUPERVISOR_ARGS' 'ExecReload=/bin/kill -HUP $MAINPID' \
    'KillMode=process' 'Restart=on-failure' 'TasksMax=infinity' 'WantedBy=multi-user.target'; do
    unit_line "$line"
done
reloads=$(grep '^ExecReload=' "$unit")
if [ "$reloads" = 'ExecReload=/usr/bin/supervisor check $SUPERVISOR_ARGS'$'\n''ExecReload=/bin/kill -HUP $MAINPID' ]; then
    pass "unit: reload checks the role file before it sends SIGHUP"
else
    flunk "unit: reload checks the role file before it sends SIGHUP" "$reloads"
fi
if grep -q '^OOMScoreAdjust=' "$unit"; then
    flunk "unit sets no OOMScoreAdjust (Nomad's tasks would inherit it)" "$(grep '^OOMScoreAdjust=' "$unit")"
else
    pass "unit sets no OOMScoreAdjust (Nomad's tasks would inherit it)"
fi
nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
if [ "${nofile:-0}" -ge 65536 ] 2>/dev/null; then pass "unit: LimitNOFILE=$nofile >= 65536"; else flunk "unit: LimitNOFILE >= 65536" "got: $nofile"; fi
# systemd's stop timeout must outlast the supervisor's ordered stop: the sum
# of both agents' default stop timeouts ("SIGKILL after Ns" in the plan of
# the dev role, which runs both agents with the defaults).
stop_secs=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
plan_out=$(supervisor check --role dev 2>&1)
# An upgrade in progress gets up to 15 s to end before the agents are
# stopped (ROLLOUT_STOP_BOUND in src/supervise/daemon/mod.rs).
agent_stops=15
for n in $(grep -oE 'SIGKILL after [0-9]+s' <<<"$plan_out" | grep -oE '[0-9]+'); do
    agent_stops=$((agent_stops + n))
done
if [ "$(grep -cE 'SIGKILL after [0-9]+s' <<<"$plan_out")" -ne 2 ]; then
    flunk "unit: TimeoutStopSec outlasts both agents' stop timeouts" "no stop_timeout in the plan:"$'\n'"$plan_out"
elif [ "${stop_secs:-0}" -gt "$agent_stops" ] 2>/dev/null; then
    pass "unit: TimeoutStopSec=$stop_secs outlasts both agents' stop timeouts and a rollout's end ($agent_stops s)"
else
    flunk "unit: TimeoutStopSec outlasts both agents' stop timeouts" "TimeoutStopSec=$stop_secs, agents $agent_stops s"
fi

# --- the environment file sets the roles ----------------------------------------
# unit_check ENV_FILE: runs the unit's ExecStartPre the way systemd runs it
# with EnvironmentFile=ENV_FILE: KEY=value lines (comments skipped) in a
# clean environment, then $SUPERVISOR_ARGS split at whitespace.
unit_check() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c '
        while IFS= read -r line; do
            case "$line" in "" | "#"*) continue ;; esac
            export "${line%%=*}=${line#*=}"
        done <"$1"
        exec /usr/bin/supervisor check $SUPERVISOR_ARGS' bash "$1"
}
# A client's role file without `roles` (ams2-client-01 of the reference
# scenario): the roles come from the environment file only.
envf=/etc/default/hashi-supervisor
grep -v '^roles *=' config/examples/ams2-client-01.toml >"$scratch/client.toml"
{ cat "$envf"; echo "HASHI_SUPERVISOR_CONFIG=$scratch/client.toml"; } >"$scratch/env-norole"
# Secure by default: a client needs its join token too (a well-formed one
# no cluster has: `check` only reads it).
{ cat "$scratch/env-norole"; echo 'HASHI_SUPERVISOR_ROLE=nomad-client'
  echo 'HASHI_SUPERVISOR_JOIN_TOKEN=abc123.0123456789abcdef@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'; } >"$scratch/env-role"
env_out=$(unit_check "$scratch/env-norole" 2>&1)
if [ $? -ne 0 ] && grep -q 'no roles' <<<"$env_out"; then
    pass "without a role in the environment file the role-less client file is rejected"
else
    flunk "without a role in the environment file the role-less client file is rejected" "$env_out"
fi
env_out=$(unit_check "$scratch/env-role" 2>&1)
if [ $? -eq 0 ] && grep -qE '^roles: +nomad-client$' <<<"$env_out"; then
    pass "HASHI_SUPERVISOR_ROLE=nomad-client in the environment file makes a valid client plan"
else
    flunk "HASHI_SUPERVISOR_ROLE=nomad-client in the environment file makes a valid client plan" "$env_out"
fi
sed 's/^SUPERVISOR_ARGS=.*/SUPERVISOR_ARGS=--role dev --log-level debug/' "$envf" >"$scratch/env-args"
env_out=$(unit_check "$scratch/env-args" 2>&1)
if [ $? -eq 0 ] && grep -qE '^roles: +dev$' <<<"$env_out"; then
    pass "SUPERVISOR_ARGS=--role dev --log-level debug in the environment file reaches the command line"
else
    flunk "SUPERVISOR_ARGS=--role dev --log-level debug in the environment file reaches the command line" "$env_out"
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
    # FAKE_RC: the fake's exit status (a failing stop or restart).
    printf '#!/bin/sh\necho "%s $*" >>"$FAKE_LOG"\nexit "${FAKE_RC:-0}"\n' "$tool" >"$fake/$tool"
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
FAKE_RC=1 expect_calls "deb postinst upgrade succeeds when the restart fails" \
    "systemctl daemon-reload"$'\n'"deb-systemd-invoke try-restart $U" up "$dc/postinst" configure 0.0.1
FAKE_RC=1 expect_calls "deb prerm remove succeeds when the stop fails" "deb-systemd-invoke stop $U" up "$dc/prerm" remove
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
FAKE_RC=1 expect_calls "rpm %postun upgrade succeeds when the restart fails" \
    "systemctl daemon-reload"$'\n'"systemctl try-restart $U" up "$scratch/rpm-POSTUN" 1
FAKE_RC=1 expect_calls "rpm %preun erase succeeds when the stop fails" \
    "systemctl --no-reload disable $U"$'\n'"systemctl stop $U" up "$scratch/rpm-PREUN" 0

check "bash completion parses" bash -n /usr/share/bash-completion/completions/supervisor
# The rpm's unit differs only in its EnvironmentFile; the binary it names
# exists now that the deb is installed.
rpm_unit_out=$(systemd-analyze verify "$scratch/usr/lib/systemd/system/hashi-supervisor.service" 2>&1)
if [ $? -eq 0 ] && ! grep -q 'hashi-supervisor.service' <<<"$rpm_unit_out"; then
    pass "systemd-analyze verify accepts the rpm's unit"
else
    flunk "systemd-analyze verify accepts the rpm's unit" "$rpm_unit_out"
fi

# --- the package as installed runs a node ----------------------------------------
# ams2-server-01 from config/examples, as an operator would set it up: only
# [release] differs (a signed local mirror of STAND-IN agents, never
# HashiCorp's binaries). It runs in a network namespace that holds the
# node's addresses on its loopback, with the unit's exact ExecStartPre and
# ExecStart command lines, the unit's environment file and the default
# paths (no systemd as PID 1 here). Its Nomad expects 3 servers: two more
# Nomad server stand-ins (ams2-server-03, lon1-server-01) on their own
# addresses find it through its Consul, as in the reference cluster, so
# that it can elect a leader and the node becomes ready.
e2e_ns=hashi-pkg-e2e-$$
e2e_netns=/run/netns/$e2e_ns
e2e_log=$scratch/e2e-supervisor.log
e2e_pid=
e2e_bg=()
e2e_cleanup() {
    [ -n "$e2e_pid" ] && kill -KILL "$e2e_pid" 2>/dev/null
    [ "${#e2e_bg[@]}" -gt 0 ] && kill "${e2e_bg[@]}" 2>/dev/null
    ip netns del "$e2e_ns" 2>/dev/null
    return 0
}
trap 'e2e_cleanup; rm -rf "$scratch"' EXIT
# Commands run in the node's namespace with nsenter, which execs them: a
# background job's $! is then the command's own pid (signals reach it).
in_ns() { nsenter --net="$e2e_netns" "$@"; }
# unit_cmd KEY: the unit's KEY= line.
unit_cmd() { grep -m1 "^$1=" "$unit" | sed "s/^$1=//"; }
# agent_pid PRODUCT: the pid the supervisor recorded for PRODUCT.
agent_pid() { cut -d' ' -f1 "/var/lib/hashi-supervisor/run/$1.pid" 2>/dev/null; }
# wait_until SECONDS CMD...: polls CMD until it succeeds or time runs out.
wait_until() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.3
    done
}
ready_code() { in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://10.0.1.11:4680/ready; }
is_ready() { [ "$(ready_code)" = 200 ]; }

e2e_tools_ok=1
if [ ! -x target/debug/hashi-mirror ] || [ ! -x target/debug/hashi-standin ]; then
    cargo build -q -p hashi-testrig --bin hashi-mirror -p hashi-standin --bin hashi-standin || e2e_tools_ok=0
fi
if [ "$e2e_tools_ok" = 1 ] && ip netns add "$e2e_ns"; then
    in_ns ip link set lo up
    for a in 10.0.1.11 203.0.113.11 10.0.1.13 203.0.113.21; do in_ns ip addr add "$a/32" dev lo; done
    consul_v=$(sed -n '/^\[consul\]/,/^\[/s/^version = "\(.*\)"/\1/p' config/examples/ams2-server-01.toml)
    nomad_v=$(sed -n '/^\[nomad\]/,/^\[/s/^version = "\(.*\)"/\1/p' config/examples/ams2-server-01.toml)
    check "a signed mirror of stand-ins is built (consul $consul_v, nomad $nomad_v)" \
        target/debug/hashi-mirror build --out "$scratch/mirror" --product "consul=$consul_v" \
        --product "nomad=$nomad_v" --binary target/debug/hashi-standin --key-out "$scratch/mirror-key.asc"
    nsenter --net="$e2e_netns" target/debug/hashi-mirror serve "$scratch/mirror" --listen 127.0.0.1:18080 >/dev/null 2>&1 &
    e2e_bg+=($!)
    check "the mirror serves on 127.0.0.1:18080 in the node's namespace" \
        wait_until 30 in_ns curl -sf -o /dev/null http://127.0.0.1:18080/consul/index.json
    install -m 0644 "$scratch/mirror-key.asc" /etc/hashi-supervisor/mirror-key.asc
    {
        cat config/examples/ams2-server-01.toml
        printf '\n[release]\nmirror = "http://127.0.0.1:18080"\ntrust_hashicorp_key = false\n'
        printf 'trusted_key_files = ["/etc/hashi-supervisor/mirror-key.asc"]\n'
        # The two peer Nomad servers below are bare stand-ins without TLS
        # material, so this node runs the plaintext variant; the secured
        # path (cluster init, join token) is tests/it/secure_cluster.rs.
        printf '\n[security]\nplaintext = true\n'
    } >/etc/hashi-supervisor/node.toml
    pre=$(unit_cmd ExecStartPre)
    start=$(unit_cmd ExecStart)
    # The unit's environment: its EnvironmentFile, nothing else; an unquoted
    # $SUPERVISOR_ARGS is split on whitespace, as systemd splits it.
    e2e_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
    while IFS= read -r kv; do e2e_env+=("$kv"); done < <(grep -E '^[A-Z_]+=' /etc/default/hashi-supervisor)
    SUPERVISOR_ARGS=$(sed -n 's/^SUPERVISOR_ARGS=//p' /etc/default/hashi-supervisor)
    read -r -a pre_argv <<<"${pre//\$SUPERVISOR_ARGS/$SUPERVISOR_ARGS}"
    read -r -a start_argv <<<"${start//\$SUPERVISOR_ARGS/$SUPERVISOR_ARGS}"
    check "ExecStartPre ($pre) accepts the node's role file" in_ns "${e2e_env[@]}" "${pre_argv[@]}"
    nsenter --net="$e2e_netns" "${e2e_env[@]}" "${start_argv[@]}" >"$e2e_log" 2>&1 &
    e2e_pid=$!
    for peer in ams2-server-03:ams2:10.0.1.13 lon1-server-01:lon1:203.0.113.21; do
        IFS=: read -r pname pdc pip <<<"$peer"
        mkdir -p "$scratch/$pname/config"
        printf '%s\n' "name = \"$pname\"" 'region = "eu"' "datacenter = \"$pdc\"" \
            "data_dir = \"$scratch/$pname/data\"" "bind_addr = \"$pip\"" \
            'ports {' '  http = 14646' '  rpc = 14647' '  serf = 14648' '}' \
            'server {' '  enabled = true' '  bootstrap_expect = 3' '}' \
            'consul {' '  address = "127.0.0.1:8500"' '}' >"$scratch/$pname/config/nomad.hcl"
        nsenter --net="$e2e_netns" target/debug/hashi-standin --product nomad agent \
            -config="$scratch/$pname/config" >"$scratch/$pname.log" 2>&1 &
        e2e_bg+=($!)
    done
    if wait_until 180 is_ready; then
        pass "ExecStart ($start): /ready answers 200"
    else
        flunk "ExecStart ($start): /ready answers 200" \
            "last: $(ready_code); $(in_ns curl -s --max-time 2 http://10.0.1.11:4680/ready)"$'\n'"$(grep -v 'join failed' "$e2e_log" | tail -n 30)"
    fi
    cpid=$(agent_pid consul)
    npid=$(agent_pid nomad)
    check "consul runs as the consul user" test "$(ps -o user= -p "${cpid:-0}" | tr -d ' ')" = consul
    check "the nomad server runs as the nomad user" test "$(ps -o user= -p "${npid:-0}" | tr -d ' ')" = nomad
    check_stat "755 root root" /var/lib/hashi-supervisor/data
    check_stat "750 consul consul" /var/lib/hashi-supervisor/data/consul
    check_stat "750 nomad nomad" /var/lib/hashi-supervisor/data/nomad
    check_stat "600 consul consul" /var/lib/hashi-supervisor/data/consul/node-id
    check_stat "700 nomad nomad" /var/lib/hashi-supervisor/data/nomad/server
    check "consul's node-id holds a UUID" \
        grep -qxE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' /var/lib/hashi-supervisor/data/consul/node-id
    kill -TERM "$e2e_pid"
    e2e_rc=0
    wait "$e2e_pid" || e2e_rc=$?
    e2e_pid=
    if [ "$e2e_rc" = 0 ]; then pass "SIGTERM: the supervisor exits 0"; else flunk "SIGTERM: the supervisor exits 0" "exit $e2e_rc; $(tail -n 20 "$e2e_log")"; fi
    check "SIGTERM: consul is gone" sh -c "! kill -0 ${cpid:-0}"
    check "SIGTERM: nomad is gone" sh -c "! kill -0 ${npid:-0}"
    kill "${e2e_bg[@]}" 2>/dev/null
    wait "${e2e_bg[@]}" 2>/dev/null
    e2e_bg=()
    ip netns del "$e2e_ns"
else
    flunk "the installed package runs ams2-server-01" "no stand-in tools or no network namespace"
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
# Only the package's agents count: the test suite may run stand-ins as the
# same users at the same time (from scratch dirs, never from the state dir).
for u in consul nomad; do
    check "after the purge no agent of the package runs as $u" \
        sh -c "! pgrep -u $u -f /var/lib/hashi-supervisor/"
done


# Removing ours left Debian's supervisor package as it was.
if [ "$(supervisord_status)" = installed ]; then
    pass "Debian's supervisor package is still installed"
else
    flunk "Debian's supervisor package is still installed" "status: $(supervisord_status)"
fi
check "dpkg --verify supervisor: its files are unchanged" sh -c '[ -z "$(dpkg --verify supervisor 2>&1)" ]'
check "supervisor(1) and supervisord are still there" test -s /usr/share/man/man1/supervisor.1.gz -a -x /usr/bin/supervisord
if [ "$supervisord_installed_here" = 1 ]; then
    say "purging Debian's supervisor package again"
    apt-get purge -y -q supervisor >/dev/null 2>&1 || say "warning: could not purge supervisor"
fi

ended=$(date +%s)
say "build $((build_done - started)) s, checks $((ended - build_done)) s, total $((ended - started)) s"
echo "packaging: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
