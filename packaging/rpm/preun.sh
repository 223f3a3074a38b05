# %preun of hashi-supervisor (rpm), the written-out %systemd_preun: on
# erase ($1 = 0) disable and stop the service (the supervisor stops Nomad,
# then Consul, gracefully); an upgrade ($1 >= 1) leaves it running.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable hashi-supervisor.service >/dev/null 2>&1 || :
    systemctl stop hashi-supervisor.service || :
fi
exit 0
