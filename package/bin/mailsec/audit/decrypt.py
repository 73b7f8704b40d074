"""Decryption with python-gnupg in a throw-away GnuPG home, streamed.

The home holds only the configured private key and lives inside the input's
private work folder; it is removed (after its gpg-agent is stopped) when the
session closes. The passphrase reaches gpg through loopback pinentry
(`allow-loopback-pinentry` in the home's gpg-agent.conf, `--pinentry-mode
loopback` added by python-gnupg), never through a file or the command line.

python-gnupg keeps the whole plaintext in memory unless `decrypt_file` gets an
`output=` path or an `on_data` callback. The plaintext must never be on disk, so
`on_data` hands each chunk to a small bounded queue read by the caller: when the
caller is slower than gpg, the queue fills, the reader thread blocks, the pipe
fills and gpg waits. Memory stays at a few chunks whatever the file size.

The reader never waits on that queue for good: it checks the input's stop flag
(SIGTERM) and how long gpg has been silent; on either it kills gpg, so a hung gpg
can neither hold the input past a stop nor block the other files for ever.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Optional

import gnupg

from mailsec.core.params import ConfigError
from mailsec.core.runtime import Stopped

# python-gnupg logs a warning for every non-zero exit of gpg (a corrupt file, gpg
# killed on a stop) to the root logger, which splunklib sends to stderr: splunkd
# would log each as an ERROR. This module reports those failures itself.
logging.getLogger("gnupg").propagate = False

CHUNK = 256 * 1024
QUEUE_CHUNKS = 8  # at most ~2 MiB of plaintext in flight
# gpg silent this long (no plaintext, not finished) is taken as hung and killed: the
# first chunk waits for the key's unlock, seconds on a busy host, never minutes
GPG_IDLE_TIMEOUT = 300.0
POLL = 0.2  # how often a waiting reader looks at the stop flag and the clock
_END = object()
# gpg-agent puts its sockets in the home (S.gpg-agent.browser is the longest) when
# /run/user/<uid> does not exist; a Unix socket path is at most 107 bytes
SOCKET_DIR_MAX = 107 - len("/gnupg_12345678/S.gpg-agent.browser")


class DecryptError(Exception):
    """gpg could not decrypt a file (corrupt, truncated, wrong key or passphrase)."""


class GpgTimeout(DecryptError):
    """gpg produced nothing for GPG_IDLE_TIMEOUT seconds and was killed."""


class KeyUnusable(DecryptError):
    """gpg found no usable secret key for the file: a wrong passphrase, or the file
    is encrypted to another key. The configuration's fault, not the file's."""


# libgpg-error codes (low 16 bits of `ERROR pkdecrypt_failed <code>`) that mean the
# secret key could not be used: BAD_PASSPHRASE, NO_SECKEY, CANCELED, NO_PASSPHRASE
_KEY_ERROR_CODES = frozenset({11, 17, 99, 177})


def _key_unusable(result, passphrase_given: bool = True) -> bool:
    for line in (getattr(result, "stderr", "") or "").splitlines():
        words = line.split()
        if words[:1] != ["[GNUPG:]"] or len(words) < 2:
            continue
        if words[1] in ("NO_SECKEY", "BAD_PASSPHRASE", "MISSING_PASSPHRASE"):
            return True
        if words[1] == "NEED_PASSPHRASE" and not passphrase_given:
            return True  # the key is protected and no passphrase is configured
        code = words[3] if words[1:3] == ["ERROR", "pkdecrypt_failed"] and len(words) > 3 else ""
        if code.isdigit() and int(code) & 0xFFFF in _KEY_ERROR_CODES:
            return True
    return False


def _status_summary(result) -> str:
    """gpg's own words about the failure, without anything sensitive: the
    status lines name packets and keys, never the plaintext or the passphrase."""
    lines = []
    for line in (getattr(result, "stderr", "") or "").splitlines():
        line = line.strip()
        if line.startswith("gpg:") and "passphrase" not in line.lower():
            lines.append(line[4:].strip())
    status = getattr(result, "status", None) or "decryption failed"
    detail = "; ".join(dict.fromkeys(lines))[:400]
    return f"{status}: {detail}" if detail else str(status)


class GnupgSession:
    """A throw-away GnuPG home holding one private key (or none); use as a context
    manager."""

    def __init__(
        self,
        private_key: Optional[str],
        passphrase: Optional[str],
        workdir: str,
        gpgbinary: str = "gpg",
        stop: Optional[threading.Event] = None,
    ) -> None:
        if len(workdir) > SOCKET_DIR_MAX:
            workdir = tempfile.gettempdir()  # see SOCKET_DIR_MAX
        self.home = tempfile.mkdtemp(prefix="gnupg_", dir=workdir)  # mode 0700
        self._passphrase = passphrase or None
        self._gpgbinary = gpgbinary
        self.stop = stop  # the input's stop flag, looked at while waiting for gpg
        try:
            with open(os.path.join(self.home, "gpg-agent.conf"), "w") as conf:
                # s2k-count: the agent re-protects the imported key with an S2K it
                # calibrates (seconds on a busy host, paid at every unlock). This home
                # lives for one run in a 0700 folder; the passphrase itself is still
                # checked against the key's own (strong) protection.
                conf.write("allow-loopback-pinentry\ns2k-count 65536\n")
            with open(os.path.join(self.home, "gpg.conf"), "w") as conf:
                # never an external pinentry, even without a passphrase (python-gnupg
                # asks for loopback only when one is given): a curses or GUI pinentry
                # would wait for a person who is not there
                conf.write("pinentry-mode loopback\n")
            self.gpg = gnupg.GPG(gpgbinary=gpgbinary, gnupghome=self.home)
            self.gpg.buffer_size = CHUNK
            self._processes: list = []
            # python-gnupg (pinned 0.5.5) gives no handle on the gpg it starts; this
            # records each one so that a hung gpg can be killed
            opener = self.gpg._open_subprocess

            def open_subprocess(*args, **kwargs):
                process = opener(*args, **kwargs)
                self._processes.append(process)
                return process

            self.gpg._open_subprocess = open_subprocess
            if private_key is None:  # an empty home (the save-time check of a public key)
                return
            imported = self.gpg.import_keys(private_key)
            if not getattr(imported, "sec_imported", 0):
                raise ConfigError(
                    "pgp_private_key",
                    "gpg did not import a secret key from it; paste the "
                    "ASCII-armored private key (gpg --armor --export-secret-keys)",
                )
        except BaseException:
            self.close()
            raise

    def decrypt_chunks(
        self,
        path: str,
        stop: Optional[threading.Event] = None,
        idle_timeout: float = GPG_IDLE_TIMEOUT,
    ) -> Iterator[bytes]:
        """The plaintext of `path`, chunk by chunk; raises DecryptError at the end
        (after the last chunk gpg produced) when gpg reports a failure, GpgTimeout
        when gpg stays silent `idle_timeout` seconds, Stopped when `stop` (by
        default the session's) is set while waiting for gpg; gpg is killed first."""
        stop = stop or self.stop
        chunks: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        abandoned = threading.Event()
        outcome: dict = {}

        def on_data(data: bytes):
            if not data or abandoned.is_set():
                return False
            while not abandoned.is_set():
                try:
                    chunks.put(data, timeout=0.2)
                    break
                except queue.Full:
                    continue
            return False  # never buffered by python-gnupg

        def work() -> None:
            try:
                gpg = self.gpg
                gpg.on_data = on_data
                # gpg reads the file itself (the path as its argument): stdin carries
                # only the passphrase, and no Python thread copies the ciphertext
                outcome["result"] = gpg.decrypt_file(
                    io.BytesIO(b""),
                    passphrase=self._passphrase,
                    always_trust=True,
                    extra_args=["--", path],
                )
            except BaseException as error:  # reported to the reading thread
                outcome["error"] = error
            _put_end(chunks, abandoned)

        worker = threading.Thread(target=work, name="gpg-decrypt", daemon=True)
        started = len(self._processes)
        worker.start()
        try:
            last = time.monotonic()
            while True:
                try:
                    item = chunks.get(timeout=POLL)
                except queue.Empty:
                    if stop is not None and stop.is_set():
                        raise Stopped("stop requested while gpg was decrypting") from None
                    if time.monotonic() - last >= idle_timeout:
                        raise GpgTimeout(
                            f"gpg produced nothing for {idle_timeout:.0f}s: killed; the file "
                            "is tried again on the next run"
                        ) from None
                    continue
                if item is _END:
                    break
                last = time.monotonic()
                yield item
        finally:
            abandoned.set()
            if worker.is_alive():
                self._kill(started)  # hung, stopped, or abandoned by the reader
            _drain(chunks)
            worker.join()
        if "error" in outcome:
            error = outcome["error"]
            raise DecryptError(f"gpg could not be run: {type(error).__name__}: {error}")
        result = outcome.get("result")
        if result is None or not result.ok or result.returncode not in (0, None):
            if result is not None and _key_unusable(result, self._passphrase is not None):
                raise KeyUnusable(
                    f"{_status_summary(result)}; check the account's pgp_private_key and "
                    "pgp_passphrase (the key whose public part was uploaded to Google)"
                )
            raise DecryptError(_status_summary(result))

    def _kill(self, first: int) -> None:
        """Kill the gpg processes started since `first` that are still running."""
        for process in self._processes[first:]:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.kill()
        del self._processes[first:]

    def close(self) -> None:
        home = getattr(self, "home", None)
        if not home:
            return
        stop_agent(home, self._gpgbinary)
        shutil.rmtree(home, ignore_errors=True)
        self.home = ""

    def __enter__(self) -> GnupgSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def stop_agent(home: str, gpgbinary: str = "gpg") -> None:
    """Stop the gpg-agent a GnuPG home started (it holds the unlocked key)."""
    gpgconf = shutil.which("gpgconf", path=os.path.dirname(gpgbinary) or None) or "gpgconf"
    # if this fails, the agent exits by itself once its home is gone
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [gpgconf, "--homedir", home, "--kill", "gpg-agent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


def _put_end(chunks: queue.Queue, abandoned: threading.Event) -> None:
    while True:
        try:
            chunks.put(_END, timeout=0.2)
            return
        except queue.Full:
            if abandoned.is_set():
                _drain(chunks)


def _drain(chunks: queue.Queue) -> None:
    while True:
        try:
            chunks.get_nowait()
        except queue.Empty:
            return
