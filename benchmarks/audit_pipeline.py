"""audit_export pipeline benchmark: decrypt → split → parse → events, against gpg alone.

For an encrypted mbox of 256 MiB and one of 1 GiB (generated here under /tmp by
repeating the test corpus, and removed afterwards), measures in the same run:
- `gpg --decrypt` of the file to /dev/null (the baseline: nothing can be faster
  than producing the plaintext);
- the add-on's pipeline on the same file, in a child process: python-gnupg in a
  throw-away GnuPG home streaming into the mbox splitter and the MIME parser,
  every event built and serialised to JSON and written to /dev/null; its peak RSS
  is the child's own ru_maxrss.

Files are encrypted with `--compress-algo none`: Google does not document the
compression of its exports, and no compression is the hardest case for the
target (gpg alone is then at its fastest, so the pipeline's share shows most).

Prints one JSON line. Targets: throughput >= 70% of gpg alone; peak RSS <= 150 MiB,
within 10% between the two sizes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "package" / "bin"), str(ROOT / "tests")]

MiB = 1 << 20
SIZES = {"256MiB": 256 * MiB, "1GiB": 1024 * MiB}
if os.environ.get("BENCH_QUICK"):  # a smoke run while developing
    SIZES = {"256MiB": 32 * MiB, "1GiB": 64 * MiB}
PASSPHRASE = "benchmark passphrase"


def make_key(home: str) -> tuple:
    from audit.simulator import gpg_keypair

    return gpg_keypair(home, "Bench <bench@example.com>", PASSPHRASE)


def make_file(home: str, path: str, size: int) -> int:
    """An mboxrd file of about `size` bytes (the corpus repeated), encrypted to the key."""
    from audit import corpus

    begin = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # a realistic mix: 4 of 7 messages carry an attachment of 4 KiB to 512 KiB
    # (log-uniform), the others are text; about 80 KB a message on average
    specs = corpus.build("quinn@example.com", begin, 140, "bench", attachment_kib=(4, 512))
    block = corpus.mbox(specs, begin)
    gpg = subprocess.Popen(
        ["gpg", "--homedir", home, "--batch", "--trust-model", "always", "--compress-algo",
         "none", "--encrypt", "--recipient", "bench@example.com", "--output", path],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    written = 0
    while written < size:
        gpg.stdin.write(block)
        written += len(block)
    gpg.stdin.close()
    if gpg.wait() != 0:
        raise RuntimeError("gpg --encrypt failed")
    return written


def gpg_alone(home: str, path: str) -> float:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
             "--passphrase-fd", "0", "--decrypt", path],
            input=PASSPHRASE.encode(), stdout=sink, stderr=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    return time.perf_counter() - started


def peak_rss() -> int:
    """This process's own peak RSS in bytes. VmHWM, not ru_maxrss: Linux keeps
    ru_maxrss across fork and exec, so the child would report the parent's peak
    (the benchmark's corpus) whenever it is the larger."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def pipeline_child(path: str, private_key_path: str, workdir: str) -> None:
    """Runs in its own process: the pipeline as the input runs it."""
    from mailsec.audit.decrypt import GnupgSession
    from mailsec.core.events import build_event
    from mailsec.core.mailbox.pipeline import Emitter, run_pipeline

    private_key = Path(private_key_path).read_text()
    export_time = datetime(2026, 1, 2, tzinfo=timezone.utc)
    out = open(os.devnull, "w")  # noqa: SIM115

    def make_event(ordinal, parsed):
        fields = parsed.fields()
        data = {"request_id": "bench", "user": "quinn@example.com", "domain": "example.com",
                "file_index": 0, "ordinal": ordinal}  # fmt: skip
        data.update(fields)
        return build_event("google:workspace:mailbox:message", parsed.date() or export_time,
                           data, ["bench", 0, ordinal, fields["message_id"]])  # fmt: skip

    def write(events, durable):
        for event in events:
            out.write(event.to_json())
            out.write("\n")
        out.flush()

    started = time.perf_counter()
    with GnupgSession(private_key, PASSPHRASE, workdir) as gpg:
        emitter = Emitter(make_event, write)
        splitter = run_pipeline(gpg.decrypt_chunks(path), emitter)
    seconds = time.perf_counter() - started
    peak = peak_rss()
    print(json.dumps({"seconds": seconds, "messages": emitter.messages,
                      "plaintext_bytes": splitter.bytes, "peak_rss": peak}))  # fmt: skip


def pipeline(path: str, private_key_path: str, workdir: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", path, private_key_path, workdir],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        pipeline_child(*sys.argv[2:])
        return 0
    scratch = tempfile.mkdtemp(prefix="bench_audit_", dir="/tmp")
    try:
        home = os.path.join(scratch, "gpg")
        _public, private = make_key(home)
        key_path = os.path.join(scratch, "private.asc")
        Path(key_path).write_text(private)
        os.chmod(key_path, 0o600)
        figures: dict = {"benchmark": "audit_pipeline", "compress_algo": "none"}
        for label, size in SIZES.items():
            path = os.path.join(scratch, f"{label}.pgp")
            plaintext = make_file(home, path, size)
            baseline = gpg_alone(home, path)
            measured = pipeline(path, key_path, scratch)
            os.unlink(path)
            figures[label] = {
                "plaintext_mib": round(plaintext / MiB, 1),
                "messages": measured["messages"],
                "avg_message_kib": round(plaintext / measured["messages"] / 1024, 1),
                "pipeline_messages_s": round(measured["messages"] / measured["seconds"]),
                "gpg_alone_mib_s": round(plaintext / MiB / baseline, 1),
                "pipeline_mib_s": round(plaintext / MiB / measured["seconds"], 1),
                "throughput_vs_gpg": round(baseline / measured["seconds"], 3),
                "peak_rss_mib": round(measured["peak_rss"] / MiB, 1),
            }
        small, large = figures["256MiB"], figures["1GiB"]
        rss_spread = abs(large["peak_rss_mib"] - small["peak_rss_mib"]) / small["peak_rss_mib"]
        figures["rss_spread"] = round(rss_spread, 3)
        figures["targets_met"] = {
            "throughput_ge_70pct": min(small["throughput_vs_gpg"], large["throughput_vs_gpg"])
            >= 0.70,
            "peak_rss_le_150mib": max(small["peak_rss_mib"], large["peak_rss_mib"]) <= 150,
            "rss_within_10pct": rss_spread <= 0.10,
        }
        print(json.dumps(figures))
    finally:
        subprocess.run(["gpgconf", "--homedir", os.path.join(scratch, "gpg"), "--kill",
                        "gpg-agent"], check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
