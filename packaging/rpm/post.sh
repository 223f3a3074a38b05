# %post of hashi-supervisor (rpm): the state dirs (releases and runtime
# files belong to root; the supervisor makes each agent's data dir with the
# agent's owner), then make systemd see the unit. Never enables or starts
# it: the operator writes the role file first. ($1 = 1 install, 2 upgrade;
# an upgrade's restart happens in %postun.)
install -d -m 0755 -o root -g root /var/lib/hashi-supervisor \
    /var/lib/hashi-supervisor/releases /var/lib/hashi-supervisor/run
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || :
fi
exit 0
