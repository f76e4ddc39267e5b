#!/bin/sh
# Generates mosquitto's password and ACL files for docker-compose / k8s from the fleet registry
# (/fleet/devices.csv: device_id,store_id), with the same rules as scripts/stack (gen_mqtt_auth):
# an admin user, the bridge (reads store/+/# and fleet/+/#, writes store/+/catalog/# and
# device/+/receipt), and one user per device writing only its own store's event topics, reading only
# its store's catalog and its own sync receipt.
set -eu
out=${AUTH_DIR:-/mosquitto/auth}
fleet=${FLEET_FILE:-/fleet/devices.csv}
mkdir -p "$out"
plain="$out/passwd"
acl="$out/acl"
umask 077
{
  echo "admin:${MQTT_ADMIN_PASSWORD}"
  echo "bridge:${MQTT_BRIDGE_PASSWORD}"
  tail -n +2 "$fleet" | while IFS=, read -r dev store; do
    [ -n "$dev" ] && echo "${dev}:${MQTT_DEVICE_PASSWORD}"
  done
} >"$plain"
mosquitto_passwd -U "$plain"
{
  echo "pattern write fleet/%u/#"
  echo "pattern read device/%u/receipt"
  echo
  echo "user admin"
  echo "topic readwrite #"
  echo "topic read \$SYS/#"
  echo
  echo "user bridge"
  echo "topic read store/+/#"
  echo "topic read fleet/+/#"
  echo "topic write store/+/catalog/#"
  echo "topic write device/+/receipt"
  tail -n +2 "$fleet" | while IFS=, read -r dev store; do
    [ -n "$dev" ] || continue
    echo
    echo "user ${dev}"
    for t in pos inventory loyalty day; do echo "topic write store/${store}/${t}/#"; done
    echo "topic read store/${store}/catalog/#"
  done
} >"$acl"
chmod 0644 "$plain" "$acl"
echo "mosquitto auth generated for $(($(wc -l <"$plain") - 2)) devices"
