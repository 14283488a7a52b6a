# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# Sourced by tools/demo and tests/bench/jobs: a private bus of type "system" whose activation
# directory names a blockjobd from a build tree, exactly as the real system bus would start it
# (no daemon is installed anywhere, nothing runs as a system service).
#
#   private_bus_start WORKDIR DAEMON [DAEMON ARGS...]
#       starts the bus, exports DBUS_SYSTEM_BUS_ADDRESS; blockjobd's stderr goes to
#       WORKDIR/blockjobd.log, and it runs the blockjobd-opener of the same build tree (every
#       creation, root's too, has its files opened by it)
#   private_bus_daemon_pid
#       the activated daemon's pid, empty if it is not running
#   private_bus_stop
#       stops the bus; the daemon exits by itself when its bus goes

private_bus_pid=
private_bus_daemon=

private_bus_start() {
        local work=$1 daemon=$2
        shift 2
        private_bus_daemon=$daemon
        mkdir -p "$work/services"
        cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$work/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$work/services</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
        cat >"$work/services/org.blockjobd.Jobs1.service" <<SERVICE
[D-BUS Service]
Name=org.blockjobd.Jobs1
Exec=/bin/sh -c 'BLOCKJOBD_OPENER=$(dirname "$daemon")/blockjobd-opener exec $daemon $* 2>>$work/blockjobd.log'
User=root
SERVICE
        dbus-daemon --config-file="$work/bus.conf" --nofork --nosyslog --print-address=1 >"$work/address" 2>/dev/null &
        private_bus_pid=$!
        for _ in $(seq 100); do
                [ -s "$work/address" ] && break
                sleep 0.05
        done
        export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus"
}

private_bus_daemon_pid() {
        pgrep -f "^$private_bus_daemon" | head -n 1 || true
}

private_bus_stop() {
        if [ -n "$private_bus_pid" ]; then
                kill "$private_bus_pid" 2>/dev/null || true
                wait "$private_bus_pid" 2>/dev/null || true
                private_bus_pid=
        fi
        for _ in $(seq 50); do
                [ -n "$(private_bus_daemon_pid)" ] || break
                sleep 0.1
        done
}
