"""vault_export pipeline benchmark: a Vault export zip from COMPLETED to the last event.

For a zip of 256 MiB and one of 1 GiB holding one mbox (generated here under /tmp
by repeating the test corpus, and removed afterwards), served by the Vault + Cloud
Storage simulator over TLS, measures in the same run:
- throttled: the simulator sends at 64 MiB/s, the network-bound case a real
  download is. `seconds_to_last_event`: from the moment the export turned
  COMPLETED to the last event written; `transfer_alone_s`: the same object read
  to /dev/null at the same rate (the baseline: nothing can end before the last
  byte arrives); `ratio_to_transfer`.
- unthrottled: `seconds_to_last_event`; `decode_alone_s`: `unzip -p` of the same
  file to /dev/null; `ratio_to_decode` (what parsing costs on top of inflating;
  no target).
- `peak_rss_mib`: the input's own peak RSS (VmHWM), in a child process that runs
  the service as splunkd would (events serialised to JSON, written to /dev/null).

Prints one JSON line. Targets: throttled ratio <= 1.15 at both sizes; peak RSS
<= 150 MiB, within 10% between the two sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "package" / "bin"), str(ROOT / "tests")]

MiB = 1 << 20
SIZES = {"256MiB": 256 * MiB, "1GiB": 1024 * MiB}
if os.environ.get("BENCH_QUICK"):  # a smoke run while developing
    SIZES = {"256MiB": 32 * MiB, "1GiB": 64 * MiB}
RATE = 64 * MiB


def make_archive(path: str, size: int) -> str:
    """A zip of about `size` bytes holding one mbox (the corpus repeated); its MD5."""
    from audit import corpus

    begin = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # as the audit benchmark: 4 of 7 messages carry a 4 KiB to 512 KiB attachment
    specs = corpus.build("quinn@example.com", begin, 140, "bench", attachment_kib=(4, 512))
    block = corpus.mbox(specs, begin)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:  # noqa: SIM117
        with archive.open("quinn@example.com.mbox", "w", force_zip64=True) as member:
            while os.path.getsize(path) < size:
                member.write(block)
    digest = hashlib.md5()  # noqa: S324 (Vault's checksum)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def transfer_alone(sim, path: str) -> float:
    """The object read to /dev/null through the simulator at its current rate."""
    import requests
    from vault.simulator import BUCKET

    sim.objects["bench/alone.zip"] = path
    token = "bench-token"
    sim.tokens[token] = (time.time() + 3600, frozenset(sim.granted_scopes))
    url = f"{sim.url}/storage/v1/b/{BUCKET}/o/bench%2Falone.zip?alt=media"
    started = time.perf_counter()
    with requests.get(
        url,
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        verify=sim.ca_file,
        timeout=60,
    ) as response:
        for _chunk in response.iter_content(MiB):
            pass
    return time.perf_counter() - started


def decode_alone(path: str) -> float:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["unzip", "-p", path], stdout=sink, check=True)
    return time.perf_counter() - started


def peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _Slots(dict):
    def insert(self, key, state) -> bool:
        if key in self:
            return False
        self[key] = state
        return True

    def save(self, key, state) -> None:
        self[key] = state

    def delete(self, key) -> None:
        self.pop(key, None)


class _DevNullSink:
    def __init__(self) -> None:
        self.out = open(os.devnull, "w")  # noqa: SIM115
        self.messages = 0
        self.last = 0.0

    def write(self, events) -> int:
        events = list(events)
        for event in events:
            self.out.write(event.to_json())
            self.out.write("\n")
            self.messages += event.sourcetype == "google:workspace:mailbox:message"
        self.out.flush()
        self.last = time.time()
        return len(events)


def child() -> None:
    """Runs in its own process: vault_export as the input runs it, until done."""
    from mailsec.core.checkpoint import MemoryCheckpointStore
    from mailsec.core.runtime import InputRun
    from mailsec.vault.service import VaultExportService

    account = json.loads(sys.stdin.read())
    sink = _DevNullSink()
    day = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")
    run = InputRun(
        input_type="vault_export",
        name="bench",
        params={"account": "g", "users": "quinn", "first_begin_date": day},
        logger=logging.getLogger("bench"),
        sink=sink,
        checkpoints=MemoryCheckpointStore(),
        load_account=lambda tab, name: account,
        open_store=lambda collection: _Slots(),
    )
    VaultExportService(run).run()
    print(json.dumps({"last_event": sink.last, "messages": sink.messages, "peak_rss": peak_rss()}))


def run_input(sim) -> dict:
    account = dict(sim.account_fields())
    result = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps(account),
        capture_output=True,
        check=True,
        text=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    (completed,) = sim.completed_at.values()
    sim.completed_at.clear()
    measured["seconds"] = measured["last_event"] - completed
    return measured


def main() -> int:
    if sys.argv[1:] == ["--child"]:
        child()
        return 0
    from vault.simulator import VaultSimulator

    from harness.certs import TestCA

    scratch = tempfile.mkdtemp(prefix="bench_vault_", dir="/tmp")
    figures: dict = {"benchmark": "vault_pipeline", "rate_mib_s": RATE // MiB}
    try:
        ca = TestCA.create()
        for label, size in SIZES.items():
            path = os.path.join(scratch, f"{label}.zip")
            md5_hex = make_archive(path, size)
            entry: dict = {"archive_mib": round(os.path.getsize(path) / MiB, 1)}
            with VaultSimulator(ca, polls_until_done=0) as sim:
                sim.enforce_rate_quota = False
                sim.archive_file = (path, md5_hex)
                sim.ca_file = os.path.join(scratch, "ca.pem")
                Path(sim.ca_file).write_bytes(ca.cert_pem)
                sim.rate_bytes_per_s = RATE
                throttled = run_input(sim)
                alone = transfer_alone(sim, path)
                sim.rate_bytes_per_s = None
                unthrottled = run_input(sim)
            decode = decode_alone(path)
            os.unlink(path)
            entry["messages"] = throttled["messages"]
            entry["throttled"] = {
                "seconds_to_last_event": round(throttled["seconds"], 2),
                "transfer_alone_s": round(alone, 2),
                "ratio_to_transfer": round(throttled["seconds"] / alone, 3),
            }
            entry["unthrottled"] = {
                "seconds_to_last_event": round(unthrottled["seconds"], 2),
                "decode_alone_s": round(decode, 2),
                "ratio_to_decode": round(unthrottled["seconds"] / decode, 3),
            }
            entry["peak_rss_mib"] = round(
                max(throttled["peak_rss"], unthrottled["peak_rss"]) / MiB, 1
            )
            figures[label] = entry
        small, large = figures["256MiB"], figures["1GiB"]
        spread = abs(large["peak_rss_mib"] - small["peak_rss_mib"]) / small["peak_rss_mib"]
        figures["rss_spread"] = round(spread, 3)
        figures["targets_met"] = {
            "throttled_ratio_le_1_15": max(
                small["throttled"]["ratio_to_transfer"], large["throttled"]["ratio_to_transfer"]
            )
            <= 1.15,
            "peak_rss_le_150mib": max(small["peak_rss_mib"], large["peak_rss_mib"]) <= 150,
            "rss_within_10pct": spread <= 0.10,
        }
        print(json.dumps(figures))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
