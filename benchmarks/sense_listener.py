"""sense_listener throughput and latency, side by side with a baseline, in one run.

8 concurrent senders post 300-bot reports (Sense's largest) over HTTPS, one TLS
connection per report as Sense's notifier does. They run in a separate process so
that they do not share the servers' interpreter lock.

- baseline: the same HTTP stack (mailsec.sense.server.ListenerServer, same TLS
  context and limits) with an application that only reads the body and answers 200;
- listener: the real service (`mailsec.sense.service.listen`): key check, parsing,
  301 events built, serialised and written through the adapter's sink and the
  splunklib EventWriter the modular input uses (to /dev/null), the messageId ledger
  (in memory: the KV store's latency belongs to splunkd, not to this code).

Both servers run in this process, under the same conditions: the same warm-up, then
rounds that alternate them (each round starting with the other one), so that both
see the same share of a shared machine's changing load. `cpu_ms_per_report` is this
process's CPU time per report while a side was driven (the senders' CPU excluded).

Prints one JSON line. Targets: p99 < 250 ms and at least 100 reports/s (30,000
events/s). The baseline is printed beside them for scale; the former target of half
the baseline's reports/s is retired: Sense posts one report per 5 minutes per
environment, so the listener's own rate, not its share of a bare server's, is what
matters (docs/benchmarks.md).

    PYTHONPATH=package/bin:tests python benchmarks/sense_listener.py [--reports 240] [--rounds 2]
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
TARGET_REPORTS_PER_S = 100
TARGET_P99_MS = 250


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
    """Post `bodies` from a fresh sender process; wall time, latencies and the CPU
    time this (the servers') process spent meanwhile."""
    queue = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=_sender_process, args=(port, ca_pem, bodies, queue, time.time() + 0.5)
    )
    process.start()
    cpu_before = time.process_time()
    wall, latencies = queue.get(timeout=600)
    cpu = time.process_time() - cpu_before
    process.join()
    return wall, latencies, cpu


class Side:
    """One server's figures, summed over the rounds it was driven in."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reports = 0
        self.wall = 0.0
        self.cpu = 0.0
        self.latencies: list = []

    def drive(self, ca_pem, bodies) -> None:
        wall, latencies, cpu = _drive(self.port, ca_pem, bodies)
        self.reports += len(bodies)
        self.wall += wall
        # the sender waits ~0.5 s for its start signal: idle for both sides alike
        self.cpu += cpu
        self.latencies.extend(latencies)

    def figures(self) -> dict:
        latencies = sorted(self.latencies)
        return {
            "reports_per_s": round(self.reports / self.wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
            "cpu_ms_per_report": round(self.cpu / self.reports * 1000, 2),
        }


def _start_baseline(context, stop):
    server = ListenerServer(("127.0.0.1", 0), ReadOnly(), ssl_context=context, limits=Limits())
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    return server, thread


def _start_listener(cert, key, stop):
    """The real service, its events written through the adapter's sink and
    splunklib's EventWriter to /dev/null (nothing to drain: a pipe to splunkd would
    need a reader, whose CPU is splunkd's, not the listener's)."""
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
        stop=stop,
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
    if not ready.wait(10):
        raise SystemExit("the listener did not start")
    return holder["server"], thread, sink, devnull


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=240, help="reports per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds alternating the sides")
    args = parser.parse_args()
    ca = TestCA.create("benchmark CA")
    issued = ca.issue_server(("localhost", "127.0.0.1"))
    ca_pem = ca.cert_pem.decode("ascii")

    def bodies(prefix, count):
        return [
            encode(make_report(BOTS, message_id=f"{prefix}-{n}", seed=n), "as_sense_sample")
            for n in range(count)
        ]

    warm_up, measured = bodies("warm-up", 16), bodies("bench", args.reports * args.rounds)
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = issued.write(tmp, "listener")
        base_server, base_thread = _start_baseline(server_ssl_context(issued), stop)
        listen_server, listen_thread, sink, devnull = _start_listener(cert, key, stop)
        baseline, listener = Side(base_server.port), Side(listen_server.port)
        try:
            # the same warm-up for both (imports, key pools, caches), not measured
            for side in (baseline, listener):
                _drive(side.port, ca_pem, warm_up)
            # Rounds alternate the sides, each round starting with the other one, so
            # that both see the same share of this shared machine's changing load. A
            # round is a full 240-report run per side: shorter runs would make the
            # ramp-up and tail of each run weigh more, pulling the ratio towards 1.
            for number in range(args.rounds):
                chunk = measured[number * args.reports : (number + 1) * args.reports]
                order = (baseline, listener) if number % 2 == 0 else (listener, baseline)
                for side in order:
                    side.drive(ca_pem, chunk)
        finally:
            stop.set()
            base_thread.join()
            listen_thread.join()
            devnull.close()
    expected = (len(warm_up) + len(measured)) * (BOTS + 1)
    if sink.total != expected:
        raise SystemExit(f"expected {expected} events, wrote {sink.total}")
    base, listen = baseline.figures(), listener.figures()
    ratio = round(listen["reports_per_s"] / base["reports_per_s"], 3)
    print(
        json.dumps(
            {
                "benchmark": "sense_listener",
                "senders": SENDERS,
                "bots_per_report": BOTS,
                "reports": len(measured),
                "rounds": args.rounds,
                "body_bytes": len(measured[0]),
                "reports_per_s": listen["reports_per_s"],
                "events_per_s": round(listen["reports_per_s"] * (BOTS + 1), 1),
                "p50_ms": listen["p50_ms"],
                "p99_ms": listen["p99_ms"],
                "cpu_ms_per_report": listen["cpu_ms_per_report"],
                "baseline_reports_per_s": base["reports_per_s"],
                "baseline_p50_ms": base["p50_ms"],
                "baseline_p99_ms": base["p99_ms"],
                "baseline_cpu_ms_per_report": base["cpu_ms_per_report"],
                "ratio_to_baseline": ratio,
                "target_reports_per_s": TARGET_REPORTS_PER_S,
                "target_p99_ms": TARGET_P99_MS,
                "targets_met": listen["reports_per_s"] >= TARGET_REPORTS_PER_S
                and listen["p99_ms"] < TARGET_P99_MS,
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
