#!/bin/sh
# The broker's ACL for docker-compose / k8s from the fleet registry (/fleet/devices.csv:
# device_id,store_id), with the local stack's code: the fixed rules of
# config/stack/mosquitto.acl.tmpl (admin, the bridge, %u patterns for heartbeats and receipts), then
# `tillctl fleet acl` appends one block per device: it writes only its own device level of its
# store (store/<store>/<device>/#) and reads only its store's catalog. Runs in the tillstream image
# (tillctl). Identities are certificates from the fleet's CA (`tillctl fleet`; the broker takes the
# user name from the CN), so there is no password file.
set -eu
die() { echo "gen-acl: $*" >&2; exit 1; }
out=${AUTH_DIR:-/mosquitto/auth}
fleet=${FLEET_FILE:-/fleet/devices.csv}
tmpl=${ACL_TEMPLATE:-/templates/mosquitto.acl.tmpl}
tillctl=${TILLCTL:-tillctl}
[ -r "$fleet" ] || die "cannot read the fleet file $fleet"
[ -r "$tmpl" ] || die "cannot read the ACL template $tmpl"
mkdir -p "$out"
sed -e "s|@ADMIN_USER@|admin|g" -e "s|@BRIDGE_USER@|bridge|g" -e "s|@FLEET_FILE@|$fleet|g" \
  "$tmpl" >"$out/acl.tmp"
# MQTT_STORE_LEVEL_TOPICS=1 (migration): each device may also write its own store's v1
# store-level topics.
TILLSTREAM_MQTT_STORE_LEVEL_TOPICS=${MQTT_STORE_LEVEL_TOPICS:-0} \
  "$tillctl" fleet --broker-acl "$out/acl.tmp" acl --fleet "$fleet" ||
  die "tillctl fleet acl refused $fleet"
chmod 0644 "$out/acl.tmp"
mv "$out/acl.tmp" "$out/acl"
echo "mosquitto ACL generated for $(grep -c '^user ' "$out/acl") users"
