"""Checks that docker-compose.yml and k8s/ are in step with the code. Run by scripts/validate-deploy.

Every failure is printed; the exit code is the number of failures (capped at 1 for the shell).
`--write-prometheus-rules` (re)writes k8s/41-prometheus-rules.yaml from deploy/prometheus/ instead.
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "debug")

# service name in manifests -> (binary, env prefix)
SERVICES = {
    "store-bridge": ("tillstream-store-bridge", "TILLSTREAM_STORE_BRIDGE__"),
    "dedup": ("tillstream-dedup", "TILLSTREAM_DEDUP__"),
    "inventory-projection": ("tillstream-inventory-projection", "TILLSTREAM_INVENTORY_PROJECTION__"),
    "finance-export": ("tillstream-finance-export", "TILLSTREAM_FINANCE_EXPORT__"),
}
SHORTCUTS = {"TILLSTREAM_KAFKA_BROKERS", "TILLSTREAM_REGISTRY_URL", "TILLSTREAM_PG_URL",
             "TILLSTREAM_MQTT_URL", "TILLSTREAM_MQTT_TLS_DIR", "TILLSTREAM_LOG_FORMAT", "TILLSTREAM_LOG"}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


def default_config(service):
    """The service's effective default config, as JSON, from `<bin> print-config`."""
    binary, _ = SERVICES[service]
    path = os.path.join(BIN, binary)
    if not os.path.exists(path):
        fail(f"{binary} is not built ({path}); run cargo build --workspace first")
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLSTREAM_")}
    out = subprocess.run([path, "--print-config", "--config-format", "json"], capture_output=True,
                         text=True, env=env, timeout=60)
    if out.returncode != 0:
        fail(f"{binary} --print-config --config-format json failed: {out.stderr.strip()[:300]}")
        return None
    return json.loads(out.stdout)


def has_path(cfg, parts):
    cur = cfg
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return False
    return True


def check_env(where, service, env_names, configs):
    cfg = configs.get(service)
    if cfg is None:
        return
    _, prefix = SERVICES[service]
    for name in sorted(env_names):
        if name in SHORTCUTS or not name.startswith("TILLSTREAM_"):
            continue
        if not name.startswith(prefix):
            fail(f"{where}: {service} sets {name}, which is not a {prefix}* variable")
            continue
        parts = [p.lower() for p in name[len(prefix):].split("__")]
        if has_path(cfg, parts):
            ok(f"{where}: {service} {name} -> {'.'.join(parts)}")
        else:
            fail(f"{where}: {service} sets {name}, but its config has no key {'.'.join(parts)}")


def env_names_of_container(c):
    names = set()
    for e in c.get("env", []) or []:
        names.add(e["name"])
    return names


PROMETHEUS_RULES = "deploy/prometheus/tillstream.rules.yml"
PROMETHEUS_RULES_K8S = "k8s/41-prometheus-rules.yaml"


def prometheus_rules_configmap():
    """k8s/41-prometheus-rules.yaml's text: deploy/prometheus/tillstream.rules.yml in a ConfigMap."""
    rules = open(os.path.join(ROOT, PROMETHEUS_RULES)).read()
    body = "".join(f"    {line}\n" if line else "\n" for line in rules.rstrip("\n").split("\n"))
    return ("# Generated from deploy/prometheus/tillstream.rules.yml by\n"
            "# `python3 scripts/validate_deploy.py --write-prometheus-rules`: do not edit (scripts/validate-deploy\n"
            "# fails when they differ). Mounted by 40-prometheus.yaml at /etc/prometheus-rules.\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: prometheus-rules\n"
            "  namespace: tillstream\n  labels: {app.kubernetes.io/name: prometheus, "
            "app.kubernetes.io/part-of: tillstream}\n"
            "data:\n  tillstream.rules.yml: |\n" + body)


def main():
    configs = {s: default_config(s) for s in SERVICES}

    # --- docker-compose.yml --------------------------------------------------------------------
    compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    svcs = compose["services"]
    for s in SERVICES:
        if s not in svcs:
            fail(f"compose: service {s} missing")
            continue
        env = svcs[s].get("environment", {}) or {}
        check_env("compose", s, set(env.keys()), configs)
        listen = env.get(SERVICES[s][1] + "OPS__LISTEN", "")
        port = listen.rsplit(":", 1)[-1]
        hc = " ".join(svcs[s].get("healthcheck", {}).get("test", []))
        if port and f":{port}/" in hc:
            ok(f"compose: {s} healthcheck uses its ops port {port}")
        else:
            fail(f"compose: {s} healthcheck does not probe its ops port ({listen!r} vs {hc!r})")
        prom = open(os.path.join(ROOT, "config/compose/prometheus.yml")).read()
        if f"{s}:{port}" in prom:
            ok(f"compose: prometheus scrapes {s}:{port}")
        else:
            fail(f"compose: prometheus does not scrape {s}:{port}")

    # --- k8s -----------------------------------------------------------------------------------
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "k8s", "*.yaml"))):
        for d in yaml.safe_load_all(open(path)):
            if d:
                docs.append((os.path.basename(path), d))
    workloads = {d["metadata"]["name"]: (f, d) for f, d in docs
                 if d["kind"] in ("Deployment", "StatefulSet")}
    for s in SERVICES:
        if s not in workloads:
            fail(f"k8s: workload {s} missing")
            continue
        f, d = workloads[s]
        tmpl = d["spec"]["template"]
        c = tmpl["spec"]["containers"][0]
        check_env(f"k8s/{f}", s, env_names_of_container(c), configs)
        ann = tmpl["metadata"].get("annotations", {})
        listen = next((e.get("value", "") for e in c.get("env", [])
                       if e["name"] == SERVICES[s][1] + "OPS__LISTEN"), "")
        port = listen.rsplit(":", 1)[-1]
        ports = [p["containerPort"] for p in c.get("ports", [])]
        if port and int(port) in ports and ann.get("prometheus.io/port") == port:
            ok(f"k8s: {s} exposes and annotates its ops port {port}")
        else:
            fail(f"k8s: {s} ops port mismatch (listen {listen!r}, ports {ports}, annotation {ann})")
        if c.get("command", [None])[0] != SERVICES[s][0]:
            fail(f"k8s: {s} runs {c.get('command')}, expected {SERVICES[s][0]}")

    # Topics the services use by default must all be in the topology.
    topo = open(os.path.join(ROOT, "topology/topology.toml")).read()
    topics = set(re.findall(r'^name = "([^"]+)"', topo, re.M))
    for s, cfg in configs.items():
        if cfg is None:
            continue
        used = set()

        def walk(v):
            if isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, str) and v.startswith("tillstream.") and "." in v[11:] or (
                    isinstance(v, str) and v.startswith("tillstream.")):
                used.add(v)
        walk(cfg)
        for t in sorted(used):
            if t in topics:
                ok(f"topology: {s} uses {t}")
            else:
                fail(f"topology: {s} uses topic {t}, which topology/topology.toml does not define")

    # tillctl commands in compose and k8s point at shipped files and profiles.
    for where, text in [("compose", yaml.safe_dump(svcs.get("tillctl-init", {}))),
                        ("k8s", open(os.path.join(ROOT, "k8s/21-tillctl-job.yaml")).read())]:
        for profile in re.findall(r"--profile (\w+)", text):
            if f"[profiles.{profile}]" in topo:
                ok(f"{where}: tillctl uses topology profile {profile}")
            else:
                fail(f"{where}: tillctl uses unknown topology profile {profile}")

    # mosquitto: compose and k8s configure the same settings as the local stack template.
    def settings(text):
        out = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            k, _, v = line.partition(" ")
            out.setdefault(k, []).append(v)
        return out
    ignore = {"listener", "password_file", "acl_file", "persistence_location", "log_dest", "user",
              "max_inflight_messages", "max_packet_size", "log_timestamp", "log_timestamp_format",
              "cafile", "certfile", "keyfile", "crlfile"}
    # The template's placeholders take scripts/stack's defaults (`NAME=${TILLSTREAM_..:-default}`).
    stack_script = open(os.path.join(ROOT, "scripts/stack")).read()
    defaults = {"AUTOSAVE_INTERVAL": re.search(
        r'^MQTT_AUTOSAVE_INTERVAL=\$\{TILLSTREAM_MQTT_AUTOSAVE_INTERVAL:-(\d+)\}', stack_script,
        re.M).group(1)}
    template = open(os.path.join(ROOT, "config/stack/mosquitto.conf.tmpl")).read()
    for name, value in defaults.items():
        template = template.replace(f"@{name}@", value)
    # scripts/stack's default listener authentication (TILLSTREAM_MQTT_TLS=1), as it writes it.
    auth = re.search(r'auth="(# TLS only.*?)"\n', stack_script, re.S).group(1)
    template = template.replace("@AUTH@", auth)
    stack = settings(template)
    for where, text in [
        ("compose", open(os.path.join(ROOT, "config/compose/mosquitto.conf")).read()),
        ("k8s", next(d for _, d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"] == "mosquitto-config")["data"]["mosquitto.conf"]),
    ]:
        other = settings(text)
        for k, v in stack.items():
            if k in ignore:
                continue
            if other.get(k) != v:
                fail(f"{where}: mosquitto {k} is {other.get(k)}, the local stack has {v}")
        if (other.get("require_certificate") == ["true"] and other.get("use_identity_as_username") == ["true"]
                and "password_file" not in other and other.get("crlfile")):
            ok(f"{where}: mosquitto is TLS only, a client certificate names each user, a CRL is read")
        else:
            fail(f"{where}: mosquitto does not require a client certificate per user (or has no CRL)")
        if other.get("max_inflight_messages") == ["0"] and other.get("max_queued_messages") == ["0"]:
            ok(f"{where}: mosquitto drops nothing (max_queued_messages 0, max_inflight_messages 0)")
        else:
            fail(f"{where}: mosquitto may drop or stall (max_queued/inflight not 0)")

    # The ACL generator of compose/k8s equals scripts/stack's for the dev fleet (both end in
    # `tillctl fleet acl`; validate-deploy runs after the build).
    tillctl = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "tillctl")
    gen_acl = ["sh", os.path.join(ROOT, "config/compose/gen-acl.sh")]
    acl_env = dict(os.environ, TILLCTL=tillctl,
                   ACL_TEMPLATE=os.path.join(ROOT, "config/stack/mosquitto.acl.tmpl"))
    with tempfile.TemporaryDirectory() as d:
        env = dict(acl_env, AUTH_DIR=os.path.join(d, "auth"),
                   FLEET_FILE=os.path.join(ROOT, "config/fleet/devices.csv"))
        subprocess.run(gen_acl, env=env, check=True, capture_output=True)
        senv = dict(os.environ, TILLSTREAM_STACK_DIR=os.path.join(d, "stack"))
        subprocess.run([os.path.join(ROOT, "scripts/stack"), "devices",
                        os.path.join(ROOT, "config/fleet/devices.csv")], env=senv, check=True,
                       capture_output=True)

        def acl(p):
            return sorted(l.strip() for l in open(p) if l.strip() and not l.startswith("#"))
        if acl(os.path.join(d, "auth", "acl")) == acl(os.path.join(d, "stack", "mosquitto", "acl")):
            ok("mosquitto ACL: config/compose/gen-acl.sh == scripts/stack devices")
        else:
            fail("mosquitto ACL: config/compose/gen-acl.sh and scripts/stack devices differ")

    # Secrets: compose gives none a default (a `${VAR:?...}` stops compose when it is unset), and
    # .env.example names each one.
    compose_text = open(os.path.join(ROOT, "docker-compose.yml")).read()
    secret_refs = re.findall(r"\$\{([A-Z0-9_]*(?:PASSWORD|TOKEN|SECRET)[A-Z0-9_]*)(:?[-?]?)", compose_text)
    example = open(os.path.join(ROOT, ".env.example")).read()
    for var, op in sorted(set(secret_refs)):
        if op != ":?":
            fail(f"compose: secret ${{{var}}} has a default or may be empty (use ${{{var}:?...}})")
        elif not re.search(rf"^{var}=", example, re.M):
            fail(f"compose: secret {var} is missing from .env.example")
    if secret_refs and all(op == ":?" for _, op in secret_refs):
        ok(f"compose: {len(set(v for v, _ in secret_refs))} secrets required, none defaulted, all in .env.example")

    # gen-acl.sh refuses what scripts/stack refuses (ids that would be wildcards, levels or
    # another user's name in the ACL).
    with tempfile.TemporaryDirectory() as d:
        bad_cases = {
            "a '+' store id": "device_id,store_id\npos-1,+\n",
            "a '#' in a device id": "device_id,store_id\npos#1,s001\n",
            "a '/' in an id": "device_id,store_id\npos/1,s001\n",
            "a reserved name": "device_id,store_id\nbridge,s001\n",
            "the catalog level as a device": "device_id,store_id\ncatalog,s001\n",
        }
        for what, text in bad_cases.items():
            fleet = os.path.join(d, "fleet.csv")
            with open(fleet, "w") as f:
                f.write(text)
            r = subprocess.run(gen_acl, env=dict(acl_env, AUTH_DIR=os.path.join(d, "auth"), FLEET_FILE=fleet),
                               capture_output=True, text=True)
            if r.returncode != 0 and "gen-acl:" in r.stderr:
                ok(f"gen-acl.sh refuses {what}")
            else:
                fail(f"gen-acl.sh accepted {what} (exit {r.returncode}: {r.stderr.strip()[:200]})")

    # Monitoring in compose: Prometheus loads deploy/prometheus/*.rules.yml, Grafana is provisioned
    # from deploy/grafana/ and its dashboard provider reads the folder the dashboards are mounted at.
    def mounts(svc):
        out = {}
        for v in (svcs.get(svc, {}) or {}).get("volumes", []) or []:
            src, _, rest = v.partition(":")
            out[src] = rest.split(":")[0]
        return out
    prom_mounts = mounts("prometheus")
    prom_cfg = yaml.safe_load(open(os.path.join(ROOT, "config/compose/prometheus.yml")))
    rules_at = prom_mounts.get("./deploy/prometheus")
    if rules_at and any(f.startswith(rules_at + "/") and f.endswith(".rules.yml")
                        for f in prom_cfg.get("rule_files", [])):
        ok(f"compose: prometheus loads deploy/prometheus/*.rules.yml from {rules_at}")
    else:
        fail(f"compose: prometheus does not load deploy/prometheus ({rules_at!r}, "
             f"rule_files {prom_cfg.get('rule_files')})")
    graf = mounts("grafana")
    provider = yaml.safe_load(open(os.path.join(
        ROOT, "deploy/grafana/provisioning/dashboards/tillstream.yml")))["providers"][0]
    if graf.get("./deploy/grafana/provisioning") != "/etc/grafana/provisioning":
        fail("compose: grafana does not mount deploy/grafana/provisioning at /etc/grafana/provisioning")
    elif graf.get("./deploy/grafana/dashboards") != provider["options"]["path"]:
        fail(f"compose: grafana mounts the dashboards at {graf.get('./deploy/grafana/dashboards')!r}, "
             f"its provider reads {provider['options']['path']!r}")
    else:
        ok(f"compose: grafana provisioned from deploy/grafana, dashboards at {provider['options']['path']}")
    ds = yaml.safe_load(open(os.path.join(
        ROOT, "deploy/grafana/provisioning/datasources/prometheus.yml")))["datasources"][0]
    if ds["url"].startswith("http://prometheus:") and "prometheus" in svcs:
        ok(f"compose: grafana's datasource {ds['uid']} is the prometheus service")
    else:
        fail(f"compose: grafana's datasource url {ds['url']} is not the prometheus service")

    # k8s availability and monitoring: every workload with more than one replica has a
    # PodDisruptionBudget selecting it; every container has requests and a memory limit; every
    # ServiceMonitor of k8s/monitoring/ selects a Service of k8s/ with the port it scrapes.
    def selects(selector, labels):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
    pdbs = [d for _, d in docs if d["kind"] == "PodDisruptionBudget"]
    for name, (f, d) in sorted(workloads.items()):
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        if d["spec"].get("replicas", 1) > 1:
            if any(selects(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs):
                ok(f"k8s: {name} ({d['spec']['replicas']} replicas) has a PodDisruptionBudget")
            else:
                fail(f"k8s/{f}: {name} has {d['spec']['replicas']} replicas and no PodDisruptionBudget")
        for c in d["spec"]["template"]["spec"].get("containers", []):
            res = c.get("resources", {})
            if res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory") \
                    and res.get("limits", {}).get("memory"):
                ok(f"k8s: {name}/{c['name']} has cpu+memory requests and a memory limit")
            else:
                fail(f"k8s/{f}: {name}/{c['name']} lacks cpu/memory requests or a memory limit")
    for p in pdbs:
        sel = p["spec"]["selector"]["matchLabels"]
        if not any(selects(sel, d["spec"]["template"]["metadata"].get("labels", {}))
                   for _, d in workloads.values()):
            fail(f"k8s: PodDisruptionBudget {p['metadata']['name']} selects no workload")
    services = [d for _, d in docs if d["kind"] == "Service"]
    for path in sorted(glob.glob(os.path.join(ROOT, "k8s", "monitoring", "*.yaml"))):
        for m in yaml.safe_load_all(open(path)):
            if not m or m.get("kind") != "ServiceMonitor":
                continue
            name = m["metadata"]["name"]
            sel = m["spec"]["selector"]["matchLabels"]
            ns = m["spec"].get("namespaceSelector", {}).get("matchNames", [m["metadata"]["namespace"]])
            matched = [s for s in services if s["metadata"]["namespace"] in ns
                       and selects(sel, s["metadata"].get("labels", {}))]
            ports = {pt["port"] for e in [m["spec"]["endpoints"]] for pt in e}
            if not matched:
                fail(f"k8s/monitoring: ServiceMonitor {name} selects no Service")
            elif not all(ports <= {pt.get("name") for pt in s["spec"]["ports"]} for s in matched):
                fail(f"k8s/monitoring: ServiceMonitor {name} scrapes port(s) {sorted(ports)} that "
                     f"{[s['metadata']['name'] for s in matched]} do not name")
            else:
                ok(f"k8s/monitoring: ServiceMonitor {name} scrapes {sorted(ports)} of "
                   f"{[s['metadata']['name'] for s in matched]}")
    strimzi = [d for d in yaml.safe_load_all(open(os.path.join(ROOT, "k8s/strimzi/topics.yaml"))) if d]
    topology_topics = {t["name"] for t in tomllib.loads(topo)["topics"]}
    if {d["spec"]["topicName"] for d in strimzi} == topology_topics:
        ok(f"k8s/strimzi: a KafkaTopic for each of the topology's {len(topology_topics)} topics")
    else:
        fail("k8s/strimzi/topics.yaml and topology/topology.toml name different topics")

    # The k8s Prometheus loads the same rules as compose: the ConfigMap is the rules file.
    k8s_rules = os.path.join(ROOT, PROMETHEUS_RULES_K8S)
    cm = [d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "prometheus-rules"]
    if not os.path.exists(k8s_rules) or open(k8s_rules).read() != prometheus_rules_configmap() \
            or not cm or cm[0]["data"]["tillstream.rules.yml"] != open(
                os.path.join(ROOT, PROMETHEUS_RULES)).read():
        fail(f"{PROMETHEUS_RULES_K8S} differs from {PROMETHEUS_RULES}; regenerate: "
             "python3 scripts/validate_deploy.py --write-prometheus-rules")
    else:
        ok(f"k8s: {PROMETHEUS_RULES_K8S} holds {PROMETHEUS_RULES}")

    print(f"consistency: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-prometheus-rules"]:
        with open(os.path.join(ROOT, PROMETHEUS_RULES_K8S), "w") as f:
            f.write(prometheus_rules_configmap())
        sys.exit(0)
    sys.exit(main())
