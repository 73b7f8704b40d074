"""Benchmark: one mail through the rm_send_mail alert action, process start to exit,
side by side with curl posting the same body with the same client certificate to
the same Release Manager simulator (mutual TLS). Prints one JSON line.

The action runs as splunkd runs it (`python -S bin/rm_send_mail.py --execute`, the
payload on stdin) from an installed copy of output/TA_mailsec, reading its account
from the splunkd stand-in. With TA_MAILSEC_RM_TIMINGS=1 it prints its phase timings
to stderr, which give the breakdown. Runs alternate so both see the same load.
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "package" / "bin")]

from rm.simulator import RmSimulator, standard_setup  # noqa: E402

from harness.alert import run_alert  # noqa: E402
from harness.certs import TestCA  # noqa: E402
from harness.splunk_home import install_app, make_splunk_home  # noqa: E402
from harness.splunkd import SplunkdStandIn  # noqa: E402

RUNS = 20
TARGET_RATIO = 4.0
PASSWORD = "bench-P12-password"
CONFIGURATION = {
    "account": "rm_bench",
    "to": "ops@corp.example",
    "subject": "Splunk alert: benchmark",
    "text": "One mail.",
    "html": "<p>One mail.</p>",
    "include_results": "none",
    "result_index": "main",
}


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(argv, **kwargs) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0 or b'"DONE"' not in done.stdout:
        raise SystemExit(f"curl failed: {done.returncode} {done.stdout!r} {done.stderr!r}")
    return elapsed


def main() -> int:
    build = ROOT / "output" / "TA_mailsec"
    if not (build / "bin" / "rm_send_mail.py").exists():
        raise SystemExit("build the add-on first: make build")
    work = Path(tempfile.mkdtemp(prefix="rm_bench_"))
    home = make_splunk_home(work / "splunk")
    app = install_app(build, home, link_lib=True)
    script = app / "bin" / "rm_send_mail.py"
    ca = TestCA.create("RM benchmark CA")
    registry, client = standard_setup(ca)
    chain_path, key_path = client.write(work, "client")
    ca_path = ca.write(work)
    p12 = client.to_pkcs12(PASSWORD.encode())
    (work / "client.p12").write_bytes(p12)
    with SplunkdStandIn() as splunkd, RmSimulator(ca, registry=registry) as sim:
        splunkd.add_account(
            "rm_account",
            "rm_bench",
            {
                "hostname": sim.hostname,
                "whitelist_name": "SplunkAlerts",
                "client_certificate": base64.b64encode(p12).decode(),
                "certificate_password": PASSWORD,
                "ca_bundle": ca.cert_pem.decode(),
            },
            encrypted=("client_certificate", "certificate_password"),
        )
        url = f"https://{sim.hostname}/rest/mail/sendQueue/SplunkAlerts"
        action_ms, curl_ms, curl_p12_ms, phases = [], [], [], []
        body_path = work / "body.json"
        for i in range(RUNS + 1):  # the first round warms the page cache, not counted
            result = run_alert(
                script,
                configuration=CONFIGURATION,
                results=[{"host": "web1"}],
                server_uri=splunkd.server_uri,
                session_key=splunkd.session_key,
                splunk_home=home,
                env={"TA_MAILSEC_RM_TIMINGS": "1"},
                timeout=60,
            )
            result.assert_ok()
            body_path.write_bytes(sim.requests[-1].body)  # the very body the action sent
            common = ["--cacert", str(ca_path), "-H", "Content-Type: application/json"]
            common += ["--data-binary", f"@{body_path}", url]
            pem = ["curl", "-sS", "--cert", str(chain_path), "--key", str(key_path), *common]
            p12_cert = f"{work / 'client.p12'}:{PASSWORD}"
            pkcs = ["curl", "-sS", "--cert-type", "P12", "--cert", p12_cert, *common]
            c = timed(pem)
            c12 = timed(pkcs)
            if i == 0:
                continue
            action_ms.append(result.duration * 1000)
            curl_ms.append(c)
            curl_p12_ms.append(c12)
            line = [x for x in result.stderr.splitlines() if x.startswith('{"phases_ms"')][-1]
            phases.append(json.loads(line)["phases_ms"])
    delivered = len(sim.mailbox)

    def med(key):
        return statistics.median(p.get(key, 0) for p in phases)

    breakdown = {
        "imports": med("imports_ms"),
        "configuration": med("configuration_ms"),
        "certificate_load": med("certificate_ms"),
        "tls_handshake": med("tls_handshake_ms"),
        "request": med("request_ms"),
    }
    action_median = statistics.median(action_ms)
    # the rest of the send phase: waiting for a TLS 1.3 server's verdict on the certificate
    breakdown["certificate_verdict_wait"] = max(
        0, med("send_ms") - breakdown["tls_handshake"] - breakdown["request"]
    )
    breakdown["interpreter_start_and_exit"] = round(action_median - sum(breakdown.values()), 1)
    ratio = action_median / statistics.median(curl_ms)
    print(
        json.dumps(
            {
                "benchmark": "rm_send",
                "runs": RUNS,
                "mails_delivered": delivered,
                "action_median_ms": round(action_median, 1),
                "action_p90_ms": round(percentile(action_ms, 0.9), 1),
                "curl_median_ms": round(statistics.median(curl_ms), 1),
                "curl_p90_ms": round(percentile(curl_ms, 0.9), 1),
                "ratio_median": round(ratio, 2),
                "target_ratio": TARGET_RATIO,
                "target_met": ratio <= TARGET_RATIO,
                "curl_p12_median_ms": round(statistics.median(curl_p12_ms), 1),
                "ratio_to_curl_p12": round(action_median / statistics.median(curl_p12_ms), 2),
                "action_breakdown_median_ms": breakdown,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
