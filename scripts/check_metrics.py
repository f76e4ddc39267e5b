"""Checks the operations files against the code. Run by scripts/check-alerts (and scripts/test).

  --rules FILE...        Prometheus rule files: every metric an expression names is one a service
                         defines (`services/*/src/metrics.rs`, the runtime's per-service consumer
                         counter, Prometheus' `up`, or a recording rule of these files); every
                         alert has a `runbook_url` naming an existing `docs/runbooks/<name>.md`
                         that mentions the alert by name.
  --dashboards DIR       Grafana dashboards (*.json): the same metric check on every panel target
                         and templating query; with --emit-rules PATH, writes every panel
                         expression as a recording rule so `promtool check rules PATH` proves it
                         parses.
  --runbooks DIR --bin-dir DIR
                         every `tillctl …` / `tillstream-… …` command in a runbook's code blocks
                         exists (`<bin> <subcommands> --help` succeeds), and every
                         `scripts/stack <command>` is one `scripts/stack help` lists.

Every failure is printed; the exit code is 1 when there was any.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTINS = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def defined_metrics():
    """Metric names the services define: every `"tillstream_…"` literal of a metrics.rs, and the
    runtime consumer's `tillstream_<service>_consumer_recoveries_total` for each service that
    creates an `InputConsumer`."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "services", "*", "src", "metrics.rs")):
        with open(path) as f:
            names.update(re.findall(r'"(tillstream_[a-z0-9_]+)"', f.read()))
    consumer = os.path.join(ROOT, "crates", "runtime", "src", "kafka", "consumer.rs")
    with open(consumer) as f:
        has_recoveries = '"tillstream_{}_consumer_recoveries_total"' in f.read()
    if has_recoveries:
        for svc_dir in glob.glob(os.path.join(ROOT, "services", "*")):
            srcs = glob.glob(os.path.join(svc_dir, "src", "**", "*.rs"), recursive=True)
            if any("InputConsumer::new" in open(p).read() for p in srcs):
                svc = os.path.basename(svc_dir).replace("-", "_")
                names.add(f"tillstream_{svc}_consumer_recoveries_total")
    return names


def metric_names(expr):
    """The metric names a PromQL expression selects (identifiers that are not functions,
    keywords, label names, durations or Grafana variables)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)", s):
        tail = s[m.end():].lstrip()
        if tail.startswith("("):
            continue
        word = m.group(1)
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def check_names(where, expr, known):
    names = metric_names(expr)
    if not names:
        fail(f"{where}: no metric found in {expr!r}")
    for n in sorted(names):
        base = n
        for suffix in HISTOGRAM_SUFFIXES:
            if n.endswith(suffix) and n[: -len(suffix)] in known:
                base = n[: -len(suffix)]
        if base not in known:
            fail(f"{where}: metric {n} is not defined by any service")


def load_rules(paths):
    groups = []
    for p in paths:
        with open(p) as f:
            doc = yaml.safe_load(f)
        for g in doc.get("groups", []):
            groups.append((p, g))
    return groups


def check_rules(paths, known):
    groups = load_rules(paths)
    records = {r["record"] for _, g in groups for r in g["rules"] if "record" in r}
    known = known | records
    alerts = 0
    for path, g in groups:
        for r in g["rules"]:
            name = r.get("alert") or r.get("record")
            check_names(f"{os.path.relpath(path, ROOT)}: {name}", r["expr"], known)
            if "alert" not in r:
                continue
            alerts += 1
            url = r.get("annotations", {}).get("runbook_url", "")
            m = re.fullmatch(r"docs/runbooks/([a-z0-9-]+)\.md", url)
            if not m:
                fail(f"{name}: runbook_url {url!r} is not docs/runbooks/<name>.md")
                continue
            runbook = os.path.join(ROOT, url)
            if not os.path.exists(runbook):
                fail(f"{name}: runbook {url} does not exist")
            elif name not in open(runbook).read():
                fail(f"{name}: runbook {url} does not name the alert")
    print(f"  rules: {alerts} alerts and {len(records)} recording rules checked")
    return known


def dashboard_exprs(dash):
    """(where, key, expr) of every panel target and every query variable of a dashboard."""
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} target {t.get('refId')}",
                             f"panel_{p.get('id')}_{t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", q or "")
        if m:
            out.append((f"variable {v.get('name')}", f"variable_{v.get('name')}", m.group(1)))
        elif q:
            fail(f"variable {v.get('name')}: query {q!r} is not label_values(<selector>, <label>)")
    return out


def check_dashboards(folder, known, emit):
    rules = []
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    if not files:
        fail(f"no dashboards in {folder}")
    for path in files:
        rel = os.path.relpath(path, ROOT)
        with open(path) as f:
            dash = json.load(f)
        exprs = dashboard_exprs(dash)
        if not exprs:
            fail(f"{rel}: no queries")
        stem = re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(path))[0])
        for where, key, expr in exprs:
            check_names(f"{rel}: {where}", expr, known)
            # Grafana's variables and interval macros are not PromQL: substitute values.
            concrete = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
            concrete = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(:[a-z]+)?\}?", "x", concrete)
            # The record name says where the expression is: dashboard:<file>:panel_<id>_<refId>.
            rules.append({"record": f"dashboard:{stem}:{key}", "expr": concrete})
        print(f"  {rel}: {len(exprs)} queries")
    if emit:
        with open(emit, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f)


def stack_commands():
    """The commands `scripts/stack help` lists (two-space-indented lines before `services:`)."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "stack"), "help"], capture_output=True,
                         text=True, timeout=30)
    text = out.stdout.split("\nservices:")[0]
    return set(re.findall(r"^  ([a-z]+)\b", text, re.M))


def check_runbooks(folder, bin_dir):
    files = sorted(glob.glob(os.path.join(folder, "*.md")))
    commands = 0
    stack = stack_commands()
    for path in files:
        rel = os.path.relpath(path, ROOT)
        text = open(path).read()
        for block in re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S):
            for line in block.splitlines():
                line = line.strip()
                words = line.split()
                if words and words[0] == "scripts/stack":
                    if len(words) < 2 or words[1] not in stack:
                        fail(f"{rel}: `{line}`: not a `scripts/stack help` command")
                    commands += 1
                    continue
                if not words or not re.fullmatch(r"tillctl|tillstream-[a-z-]+", words[0]):
                    continue
                subs = []
                for w in words[1:]:
                    if not re.fullmatch(r"[a-z][a-z-]*", w):
                        break
                    subs.append(w)
                # A subcommand path is at most two deep; later words are arguments.
                subs = subs[:2]
                binary = os.path.join(bin_dir, words[0])
                for n in range(len(subs), -1, -1):
                    out = subprocess.run([binary, *subs[:n], "--help"], capture_output=True,
                                         text=True, timeout=30)
                    if out.returncode == 0:
                        break
                if n < len(subs) or out.returncode != 0:
                    fail(f"{rel}: `{line}`: `{words[0]} {' '.join(subs)}` is not a command")
                commands += 1
    print(f"  runbooks: {commands} commands in {len(files)} runbooks checked")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", nargs="*", default=[])
    ap.add_argument("--dashboards")
    ap.add_argument("--emit-rules")
    ap.add_argument("--runbooks")
    ap.add_argument("--bin-dir")
    a = ap.parse_args()
    known = defined_metrics() | BUILTINS
    print(f"  {len(known)} metric names defined by the services")
    known = check_rules(a.rules, known)
    if a.dashboards:
        check_dashboards(a.dashboards, known, a.emit_rules)
    if a.runbooks:
        check_runbooks(a.runbooks, a.bin_dir)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
