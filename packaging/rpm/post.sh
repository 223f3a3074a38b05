# %post of hashi-supervisor (rpm): make systemd see the unit. Never enables
# or starts it: the operator writes the role file first. ($1 = 1 install,
# 2 upgrade; an upgrade's restart happens in %postun.)
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || :
fi
exit 0
