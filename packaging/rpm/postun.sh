# %postun of hashi-supervisor (rpm), the written-out
# %systemd_postun_with_restart: reload units; on upgrade ($1 >= 1) restart
# the service only if it was running (try-restart). Erase keeps the state in
# /var/lib/hashi-supervisor and saves a changed role file as .rpmsave.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        # The restart marker first: this stop is a restart, so the
        # supervisor stops Nomad without a leave and without draining a
        # client's workloads. A stale marker is ignored at the next start.
        { install -d -m 0755 /run/hashi-supervisor && : >/run/hashi-supervisor/restart; } 2>/dev/null || :
        systemctl try-restart hashi-supervisor.service || :
    fi
fi
exit 0
