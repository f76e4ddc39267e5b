#!/bin/sh
# Generates mosquitto's password and ACL files for docker-compose / k8s from the fleet registry
# (/fleet/devices.csv: device_id,store_id), with the same rules as scripts/stack (gen_mqtt_auth):
# an admin user, the bridge (reads store/+/# and fleet/+/#, writes store/+/catalog/# and
# device/+/receipt), and one user per device writing only its own device level of its store's
# topics (store/<store>/<device>/...), reading only
# its store's catalog and its own sync receipt.
set -eu
die() { echo "gen-auth: $*" >&2; exit 1; }
# No default passwords: each must be given (compose reads them from .env; k8s from its Secret).
: "${MQTT_ADMIN_PASSWORD:?gen-auth: MQTT_ADMIN_PASSWORD is not set}"
: "${MQTT_BRIDGE_PASSWORD:?gen-auth: MQTT_BRIDGE_PASSWORD is not set}"
: "${MQTT_DEVICE_PASSWORD:?gen-auth: MQTT_DEVICE_PASSWORD is not set}"
out=${AUTH_DIR:-/mosquitto/auth}
fleet=${FLEET_FILE:-/fleet/devices.csv}
[ -r "$fleet" ] || die "cannot read the fleet file $fleet"
# Ids become MQTT user names and topic levels: the same rules as scripts/stack (a '+' or '#' in an
# id would be a wildcard in the ACL, a '/' a topic level).
[ "$(head -n 1 "$fleet" | cut -d, -f1-2)" = "device_id,store_id" ] ||
  die "$fleet:1: expected the header line 'device_id,store_id'"
valid_id() {
  case $1 in
    '' | [!A-Za-z0-9]* | *[!A-Za-z0-9_.-]*) return 1 ;;
  esac
}
n=1
tail -n +2 "$fleet" | while IFS=, read -r dev store _rest; do
  n=$((n + 1))
  [ -n "$dev$store" ] || continue
  valid_id "$dev" || die "$fleet:$n: invalid device id '$dev' (letters, digits, . _ - only)"
  valid_id "$store" || die "$fleet:$n: invalid store id '$store' (letters, digits, . _ - only)"
  case $dev in admin | bridge | catalog) die "$fleet:$n: device id '$dev' is a reserved name" ;; esac
done
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
    # Contract v2: its own device level only (the v1 store-level topics while tills migrate).
    echo "topic write store/${store}/${dev}/#"
    if [ "${MQTT_STORE_LEVEL_TOPICS:-0}" = 1 ]; then
      for t in pos inventory loyalty day; do echo "topic write store/${store}/${t}/#"; done
    fi
    echo "topic read store/${store}/catalog/#"
  done
} >"$acl"
# Only mosquitto reads the password hashes (it runs as the image's mosquitto user); the ACL holds
# no secret.
if id mosquitto >/dev/null 2>&1; then chown mosquitto "$plain" "$acl"; fi
chmod 0600 "$plain"
chmod 0644 "$acl"
echo "mosquitto auth generated for $(($(wc -l <"$plain") - 2)) devices"
