"""sense_listener throughput and latency, side by side with a baseline, in one run.

8 concurrent senders post 300-bot reports (Sense's largest) over HTTPS, one TLS
connection per report as Sense's notifier does. They run in a separate process so
that they do not share the listener's interpreter lock.

- baseline: the same HTTP stack (mailsec.sense.server.ListenerServer, same TLS
  context and limits) with an application that only reads the body and answers 200;
- listener: the real service (`mailsec.sense.service.listen`): key check, parsing,
  301 events built, serialised and written through the splunklib EventWriter the
  modular input uses (to /dev/null), the messageId ledger (in memory: the KV store's
  latency belongs to splunkd, not to this code).

Prints one JSON line. Targets: ratio >= 0.5 of the baseline's reports/s, p99 < 250 ms.

    PYTHONPATH=package/bin:tests python benchmarks/sense_listener.py [--reports 240]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT / "package" / "bin"),
    str(ROOT / "tests"),
    str(ROOT / "output" / "TA_mailsec" / "lib"),
]

from sense.sender import SenseSender, encode, make_report  # noqa: E402

from harness.certs import TestCA, server_ssl_context  # noqa: E402
from mailsec.core.checkpoint import MemoryCheckpointStore  # noqa: E402
from mailsec.core.runtime import InputRun  # noqa: E402
from mailsec.sense import service  # noqa: E402
from mailsec.sense.server import Limits, ListenerServer, Response  # noqa: E402

SENDERS = 8
BOTS = 300
KEY_NAME, KEY_VALUE = "X-API-Key", "benchmark-key-7f3a"


class ReadOnly:
    """The baseline application: read the body, answer 200."""

    def precheck(self, request):
        return None

    def handle(self, request, body):
        return Response.json(200, status="ok")


def _sender_process(port, ca_pem, bodies, queue, start_at):
    from harness.certs import TestCA as _CA  # noqa: F401  (same module, fresh process)

    context = __import__("ssl").create_default_context(cadata=ca_pem)
    latencies = []
    lock = threading.Lock()
    chunks = [bodies[n::SENDERS] for n in range(SENDERS)]

    def run(mine):
        sender = SenseSender(
            f"https://localhost:{port}/sense",
            key_name=KEY_NAME,
            key_value=KEY_VALUE,
            ssl_context=context,
        )
        for body in mine:
            began = time.perf_counter()
            answer = sender.post(body)
            elapsed = time.perf_counter() - began
            if answer.status != 200:
                raise SystemExit(f"unexpected answer {answer.status} {answer.body}")
            with lock:
                latencies.append(elapsed)

    while time.time() < start_at:
        time.sleep(0.01)
    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((time.perf_counter() - began, latencies))


def _drive(port, ca_pem, bodies):
    queue = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=_sender_process, args=(port, ca_pem, bodies, queue, time.time() + 0.5)
    )
    process.start()
    wall, latencies = queue.get(timeout=600)
    process.join()
    latencies.sort()
    return {
        "reports_per_s": round(len(bodies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
    }


def _baseline(context, ca_pem, bodies):
    server = ListenerServer(("127.0.0.1", 0), ReadOnly(), ssl_context=context, limits=Limits())
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        return _drive(server.port, ca_pem, bodies)
    finally:
        stop.set()
        thread.join()


def _listener(cert, key, ca_pem, bodies):
    from splunklib.modularinput.event_writer import EventWriter

    from mailsec.adapters.modinput import SplunkEventSink

    devnull = open(os.devnull, "w")  # noqa: SIM115
    logger = logging.getLogger("benchmark.sense")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    sink = SplunkEventSink(EventWriter(output=devnull), logger, "sense_listener://bench", "main")
    stores = {}
    ready = threading.Event()
    holder = {}
    run = InputRun(
        input_type="sense_listener",
        name="bench",
        params={
            "port": "1",  # replaced below: the listener binds an ephemeral port
            "bind_address": "127.0.0.1",
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "api_key_name": KEY_NAME,
            "api_key_value": "******",
            "max_body_bytes": str(1 << 20),
        },
        logger=logger,
        sink=sink,
        checkpoints=MemoryCheckpointStore(),
        load_account=lambda tab, name: {},
        open_store=lambda name: stores.setdefault(name, MemoryCheckpointStore()),
        input_secrets=lambda: {"api_key_value": KEY_VALUE},
    )
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        run.params["port"] = str(probe.getsockname()[1])

    def on_listening(server):
        holder["server"] = server
        ready.set()

    thread = threading.Thread(
        target=service.listen, kwargs={"run": run, "on_listening": on_listening}, daemon=True
    )
    thread.start()
    ready.wait(10)
    try:
        figures = _drive(holder["server"].port, ca_pem, bodies)
    finally:
        run.stop.set()
        thread.join()
        devnull.close()
    written = sink.total
    return figures, written


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=240, help="reports per side")
    args = parser.parse_args()
    ca = TestCA.create("benchmark CA")
    issued = ca.issue_server(("localhost", "127.0.0.1"))
    ca_pem = ca.cert_pem.decode("ascii")
    bodies = [
        encode(make_report(BOTS, message_id=f"bench-{n}", seed=n), "as_sense_sample")
        for n in range(args.reports)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = issued.write(tmp, "listener")
        context = server_ssl_context(issued)
        _baseline(context, ca_pem, bodies[:16])  # warm-up: imports, key pool, caches
        baseline = _baseline(context, ca_pem, bodies)
        listener, written = _listener(cert, key, ca_pem, bodies)
    if written != args.reports * (BOTS + 1):
        raise SystemExit(f"expected {args.reports * (BOTS + 1)} events, wrote {written}")
    ratio = round(listener["reports_per_s"] / baseline["reports_per_s"], 3)
    print(
        json.dumps(
            {
                "benchmark": "sense_listener",
                "senders": SENDERS,
                "bots_per_report": BOTS,
                "reports": args.reports,
                "body_bytes": len(bodies[0]),
                "reports_per_s": listener["reports_per_s"],
                "events_per_s": round(listener["reports_per_s"] * (BOTS + 1), 1),
                "p50_ms": listener["p50_ms"],
                "p99_ms": listener["p99_ms"],
                "baseline_reports_per_s": baseline["reports_per_s"],
                "baseline_p50_ms": baseline["p50_ms"],
                "baseline_p99_ms": baseline["p99_ms"],
                "ratio_to_baseline": ratio,
                "targets_met": ratio >= 0.5 and listener["p99_ms"] < 250,
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
