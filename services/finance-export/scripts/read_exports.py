#!/usr/bin/env python3
"""Independent reader of the finance export's day files (not the writer's code): reads every
ledger.parquet under a folder with pyarrow, and every reconciliation.csv and manifest.json with the
standard library, and prints one JSON document with what tests and the oracle compare:

  files:   per export folder: rows, debit/credit per currency, sha256 of every file (hashlib)
  lines:   per (store, business_date, line_type, source, account_role, tender): debit, credit, count
  events:  per (store, business_date, line_type): the distinct event ids
  recon:   every reconciliation row (the latest export's row wins per device-day)
  devices: per (store, business_date, device, source, account_role, tender): debit, credit
  device_events: per (store, business_date, device, source): the number of distinct event ids
  event_types: per event id: the distinct line types its lines carry (regular, adjustment)
  duplicate_lines: every (event id, line no) that is in the files more than once

Usage: read_exports.py DIR
"""
import csv
import hashlib
import json
import os
import sys

try:
    import pyarrow.parquet as pq
except ImportError as e:  # a read error is a failure, never "0 rows"
    sys.stderr.write(f"read_exports.py: pyarrow is not importable: {e}\n")
    sys.exit(3)


def main(root):
    files, lines, events, recon = {}, {}, {}, {}
    devices, device_events, event_types, line_copies = {}, {}, {}, {}
    exports = []
    for store in sorted(os.listdir(root)):
        sdir = os.path.join(root, store)
        if store.startswith(".") or not os.path.isdir(sdir):
            continue
        for name in sorted(os.listdir(sdir)):
            exports.append((store, name, os.path.join(sdir, name)))
    for store, name, edir in exports:
        with open(os.path.join(edir, "manifest.json"), "rb") as f:
            manifest = json.load(f)
        entry = {"export_seq": manifest["export_seq"], "kind": manifest["kind"], "sha256": {}}
        for fn in sorted(os.listdir(edir)):
            with open(os.path.join(edir, fn), "rb") as f:
                entry["sha256"][fn] = hashlib.sha256(f.read()).hexdigest()
        table = pq.read_table(os.path.join(edir, "ledger.parquet"))
        cols = table.to_pydict()
        n = table.num_rows
        entry["rows"] = n
        totals = {}
        for i in range(n):
            cur = cols["currency"][i]
            t = totals.setdefault(cur, [0, 0])
            t[0] += cols["debit_minor"][i]
            t[1] += cols["credit_minor"][i]
            key = "|".join([
                cols["store_id"][i], str(cols["business_date"][i]), cols["line_type"][i],
                cols["source"][i], cols["account_role"][i], cols["tender"][i],
            ])
            agg = lines.setdefault(key, [0, 0, 0])
            agg[0] += cols["debit_minor"][i]
            agg[1] += cols["credit_minor"][i]
            agg[2] += 1
            ekey = "|".join([cols["store_id"][i], str(cols["business_date"][i]), cols["line_type"][i]])
            events.setdefault(ekey, set()).add(cols["event_id"][i])
            day = [cols["store_id"][i], str(cols["business_date"][i]), cols["device_id"][i],
                   cols["source"][i]]
            dkey = "|".join(day + [cols["account_role"][i], cols["tender"][i]])
            dagg = devices.setdefault(dkey, [0, 0])
            dagg[0] += cols["debit_minor"][i]
            dagg[1] += cols["credit_minor"][i]
            device_events.setdefault("|".join(day), set()).add(cols["event_id"][i])
            event_types.setdefault(cols["event_id"][i], set()).add(cols["line_type"][i])
            lkey = f'{cols["event_id"][i]}#{cols["line_no"][i]}'
            line_copies[lkey] = line_copies.get(lkey, 0) + 1
        entry["totals"] = totals
        files[f"{store}/{name}"] = entry
        with open(os.path.join(edir, "reconciliation.csv"), newline="") as f:
            for row in csv.DictReader(f):
                key = "|".join([row["store_id"], row["business_date"], row["device_id"]])
                prev = recon.get(key)
                if prev is None or prev["_export_seq"] < manifest["export_seq"]:
                    row["_export_seq"] = manifest["export_seq"]
                    recon[key] = row
    out = {
        "files": files,
        "lines": lines,
        "events": {k: sorted(v) for k, v in events.items()},
        "recon": recon,
        "devices": devices,
        "device_events": {k: len(v) for k, v in device_events.items()},
        "event_types": {k: sorted(v) for k, v in event_types.items()},
        "duplicate_lines": sorted(k for k, n in line_copies.items() if n > 1),
    }
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
