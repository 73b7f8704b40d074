"""A tiny alert action: reads splunkd's payload and results file, reports what it saw."""

import csv
import gzip
import json
import os
import sys
import time

import import_declare_test  # noqa: F401


def main(argv):
    if len(argv) < 2 or argv[1] != "--execute":
        print(f"expected --execute, got {argv[1:]}", file=sys.stderr)
        return 1
    payload = json.loads(sys.stdin.read())
    config = payload["configuration"]
    with gzip.open(payload["results_file"], "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = list(reader)
    log = os.path.join(os.environ["SPLUNK_HOME"], "var", "log", "splunk", "demo_alert_modalert.log")
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"sending to {config.get('recipient')} ({len(rows)} results)\n")
    if config.get("sleep"):
        time.sleep(float(config["sleep"]))
    with open(config["report_path"], "w", encoding="utf-8") as fh:
        json.dump(
            {
                "argv": argv[1:],
                "cwd": os.getcwd(),
                "payload": payload,
                "header": header,
                "rows": rows,
            },
            fh,
        )
    return int(config.get("exit_code") or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
