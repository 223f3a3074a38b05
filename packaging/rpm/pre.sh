# %pre of hashi-supervisor (rpm): the agents' system users and groups,
# created only when missing (idempotent across installs and upgrades).
for name in consul nomad; do
    if ! getent group "$name" >/dev/null; then
        groupadd -r "$name"
    fi
    if ! getent passwd "$name" >/dev/null; then
        useradd -r -g "$name" -d /var/lib/hashi-supervisor -M \
            -s /sbin/nologin -c "$name agent (hashi-supervisor)" "$name"
    fi
done
exit 0
