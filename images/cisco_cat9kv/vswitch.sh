#!/bin/sh
# cisco_cat9kv's entrypoint: the optional ASIC emulation settings. A vswitch.xml at /vswitch.xml
# (baked into the image, or bound at run time as containerlab's docs show:
# `binds: [/path/to/vswitch.xml:/vswitch.xml]`) goes on the day-0 CD as conf/vswitch.xml, where
# the Catalyst 9000v reads it (vrnetlab's cat9kv does the same). Its <prod_serial_number> is
# replaced by a serial made once per container (7 characters A-Z0-9, kept in the state dir
# across restarts), so two switches built from one file do not share a serial. Without the
# file the CD has no conf/ folder. Then the launcher replaces this shell (it stays PID 1).
set -eu
conf=/etc/launcher/cisco_cat9kv/day0/conf
rm -rf "$conf"
if [ -f /vswitch.xml ]; then
  state=/var/lib/launcher
  mkdir -p "$state" "$conf"
  if [ ! -s "$state/cat9kv-serial" ]; then
    tr -dc 'A-Z0-9' </dev/urandom | head -c 7 >"$state/cat9kv-serial"
  fi
  serial=$(cat "$state/cat9kv-serial")
  sed "s|<prod_serial_number>[^<]*</prod_serial_number>|<prod_serial_number>$serial</prod_serial_number>|" \
    /vswitch.xml >"$conf/vswitch.xml"
  echo "cisco_cat9kv: /vswitch.xml on the day-0 CD as conf/vswitch.xml (serial $serial)" >&2
fi
exec /usr/local/bin/launcher "$@"
