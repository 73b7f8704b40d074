"""Run Splunk AppInspect on the package as Splunk Cloud vetting does, and gate on it.

Fails on any failure, error or future failure (precert mode, cloud tag). Warnings
and manual checks are printed; each warning is fixed or explained in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

GATING = ("failure", "error", "future_failure")


def main(package: str) -> int:
    appinspect = os.path.join(os.path.dirname(sys.executable), "splunk-appinspect")
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        command = [appinspect, "inspect", package, "--mode", "precert"]
        command += ["--included-tags", "cloud", "--data-format", "json"]
        command += ["--output-file", report_path, "--max-messages", "all"]
        command += ["--skip-trusted-libraries-update"]
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        with open(report_path) as handle:
            report = json.load(handle)
    findings = defaultdict(list)
    for entry in report["reports"]:
        for group in entry["groups"]:
            for check in group["checks"]:
                messages = [m.get("message", "") for m in check.get("messages", [])]
                findings[check["result"]].append((check["name"], messages))
    summary = {result: len(checks) for result, checks in sorted(findings.items())}
    print("AppInspect (precert, cloud):", json.dumps(summary))
    for result in (*GATING, "warning", "manual_check"):
        for name, messages in findings.get(result, []):
            print(f"  {result.upper():15} {name}")
            for message in messages[:5]:
                print(f"      {message[:300]}")
    gating = sum(len(findings.get(result, [])) for result in GATING)
    if gating:
        print(f"AppInspect gate: FAILED ({gating} failures, errors or future failures)")
        return 1
    print("AppInspect gate: passed (0 failures, 0 errors, 0 future failures)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
