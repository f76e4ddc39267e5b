"""Checks the Grafana dashboards against Grafana's own dashboard schema, without a Grafana.

Grafana's schema comes as generated types in the grafana-foundation-sdk package (PyPI, installed
by scripts/check-alerts into its virtualenv). Each dashboard is decoded into those types and
encoded back: a field the schema does not know (a typo, a field at the wrong level) is dropped by
the round trip and reported, as is a value the types change. Every panel's type must be one of the
schema's panel plugins (or a row), every target must be a Prometheus query on the provisioned
datasource (deploy/grafana/provisioning), and uids and panel ids must be unique.

Usage: check_dashboards.py DIR. The exit code is 1 when anything failed.
"""
import glob
import json
import os
import sys

from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROVISIONED = os.path.join(ROOT, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml")

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def lost(original, back, path):
    """Paths of `original` that the round trip through the schema's types lost or changed."""
    out = []
    if isinstance(original, dict):
        if not isinstance(back, dict):
            return [f"{path}: not an object in the schema"]
        for k, v in original.items():
            if k not in back:
                out.append(f"{path}.{k}: not in Grafana's dashboard schema")
            else:
                out += lost(v, back[k], f"{path}.{k}")
    elif isinstance(original, list):
        if not isinstance(back, list) or len(original) != len(back):
            return [f"{path}: list changed by the schema"]
        for i, (a, b) in enumerate(zip(original, back)):
            out += lost(a, b, f"{path}[{i}]")
    elif original != back:
        out.append(f"{path}: {original!r} became {back!r}")
    return out


def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))


def provisioned_datasource():
    """The Prometheus datasource deploy/grafana/provisioning provisions (type and uid)."""
    with open(PROVISIONED) as f:
        ds = yaml.safe_load(f)["datasources"][0]
    return {"type": ds["type"], "uid": ds["uid"]}


def main():
    register_default_plugins()
    datasource = provisioned_datasource()
    folder = sys.argv[1]
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    if not files:
        fail(f"no dashboards in {folder}")
    uids = {}
    for path in files:
        name = os.path.basename(path)
        with open(path) as f:
            src = json.load(f)
        back = json.loads(JSONEncoder().encode(Dashboard.from_json(src)))
        for problem in lost(src, back, ""):
            fail(f"{name}: {problem}")
        uid = src.get("uid")
        if not uid or uid in uids:
            fail(f"{name}: uid {uid!r} missing or also used by {uids.get(uid)}")
        uids[uid] = name
        ids = set()
        count = 0
        for p in panels(src.get("panels", [])):
            count += 1
            where = f"{name}: panel {p.get('title')!r}"
            if p.get("id") in ids:
                fail(f"{where}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            ptype = p.get("type")
            if ptype != "row" and cogruntime.panelcfg_config(ptype) is None:
                fail(f"{where}: panel type {ptype!r} is not a Grafana panel plugin")
            if ptype == "row":
                continue
            if not p.get("targets"):
                fail(f"{where}: no queries")
            if not p.get("description"):
                fail(f"{where}: no description (the panel's meaning)")
            for t in p.get("targets", []):
                if t.get("datasource", p.get("datasource")) != datasource:
                    fail(f"{where}: target {t.get('refId')} is not on the provisioned {datasource}")
                if not t.get("expr"):
                    fail(f"{where}: target {t.get('refId')} has no PromQL expression")
        print(f"  {name}: {count} panels against Grafana's dashboard schema")
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
