"""`make demo`: the add-on's every part run the way splunkd runs it, against the
simulators and the splunkd stand-in, with a summary per part.

Each service contributes `tests/<part>/demo_part.py` with TITLE and `run(env) -> dict`.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from harness import modinput
from harness.certs import TestCA
from harness.splunk_home import install_app
from harness.splunkd import SplunkdStandIn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo-out"
PARTS = ("ser", "ser_usage", "sense", "audit", "rm")
INPUTS = ("ser_report", "ser_usage", "sense_listener", "audit_export")


@dataclass
class DemoEnv:
    splunkd: SplunkdStandIn
    splunk_home: Path
    app_dir: Path
    ca: TestCA
    tmp: Path

    def script(self, name: str) -> Path:
        return self.app_dir / "bin" / name

    def show(self, title: str, events, limit: int = 3) -> None:
        events = list(events)
        print(f"  -- {title}: {len(events)} event(s); the first {min(limit, len(events))}:")
        for event in events[:limit]:
            sourcetype = getattr(event, "sourcetype", None)
            data = getattr(event, "data", event)
            text = data if isinstance(data, str) else json.dumps(data, default=str)
            print(f"     [{sourcetype}] {text[:300]}{'...' if len(text) > 300 else ''}")


def foundation(env: DemoEnv) -> dict:
    """Every input's scheme, and its validation of a good and a bad value."""
    summary = {}
    for name in INPUTS:
        scheme = modinput.scheme(
            env.script(f"{name}.py"), env={"SPLUNK_HOME": str(env.splunk_home)}
        )
        summary[name] = {"parameters": len(scheme.arguments) - 1}
    bad = modinput.validate(
        env.script("ser_report.py"),
        "ser_report://demo",
        {"account": "demo", "window": "2h"},
        server_uri=env.splunkd.server_uri,
        session_key=env.splunkd.session_key,
    )
    print(f"  validation of window=2h refused: {bad.message}")
    summary["validation_refuses_bad_window"] = not bad.ok
    return summary


def main() -> int:
    build = ROOT / "output" / "TA_mailsec"
    if not build.exists():
        print("output/TA_mailsec is missing: run `make demo`, which builds first.")
        return 2
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "tmp").mkdir(parents=True)
    splunk_home = OUT / "splunk"
    app_dir = install_app(build, splunk_home)
    results: dict[str, dict] = {}
    failed = []
    with SplunkdStandIn() as splunkd:
        env = DemoEnv(
            splunkd, splunk_home, app_dir, TestCA.create("TA_mailsec demo CA"), OUT / "tmp"
        )
        steps = [("foundation", "Add-on package, schemes and validation", foundation)]
        missing = {}
        for part in PARTS:
            if not (ROOT / "tests" / part / "demo_part.py").exists():
                missing[part] = {"status": "not in this build yet"}
                continue
            module = importlib.import_module(f"{part}.demo_part")
            steps.append((part, module.TITLE, module.run))
        for key, title, run in steps:
            print(f"\n== {title}")
            started = time.monotonic()
            try:
                results[key] = run(env)
            except Exception:
                traceback.print_exc()
                failed.append(key)
                results[key] = {"error": "failed, see above"}
            results[key]["seconds"] = round(time.monotonic() - started, 1)
        results.update(missing)
    print("\n== Summary")
    for key, summary in results.items():
        print(f"  {key:10} {json.dumps(summary, default=str)}")
    print(f"\nLogs: {splunk_home / 'var' / 'log' / 'splunk'}")
    if failed:
        print(f"Demo FAILED for: {', '.join(failed)}")
        return 1
    print("Demo passed: every part ran as splunkd runs it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
