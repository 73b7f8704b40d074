"""A gpg that hangs (issue 10, point 5): timed out and killed, and SIGTERM stops the
input while it waits on gpg, instead of the input waiting for ever."""

from __future__ import annotations

import threading
import time

import pytest

from audit.conftest import PASSPHRASE, sleepers
from mailsec.audit.decrypt import GnupgSession, GpgTimeout
from mailsec.core.runtime import Stopped


def _encrypted_file(tmp_path) -> str:
    path = tmp_path / "export.pgp"
    path.write_bytes(b"\x85\x01\x0c" + b"\x00" * 64)  # never read: gpg hangs first
    return str(path)


def test_a_silent_gpg_is_timed_out_and_killed(tmp_path, hanging_gpg_dir, pgp_keys, workdir):
    before = sleepers(hanging_gpg_dir)
    with GnupgSession(
        pgp_keys[1], PASSPHRASE, workdir, gpgbinary=str(hanging_gpg_dir / "gpg")
    ) as session:
        started = time.monotonic()
        with pytest.raises(GpgTimeout):
            for _ in session.decrypt_chunks(_encrypted_file(tmp_path), idle_timeout=1.0):
                pass
        assert time.monotonic() - started < 10
    assert sleepers(hanging_gpg_dir) - before == set()  # the hung gpg is gone


def test_the_stop_flag_ends_the_wait_on_gpg(tmp_path, hanging_gpg_dir, pgp_keys, workdir):
    before = sleepers(hanging_gpg_dir)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    with GnupgSession(
        pgp_keys[1], PASSPHRASE, workdir, gpgbinary=str(hanging_gpg_dir / "gpg"), stop=stop
    ) as session:
        started = time.monotonic()
        with pytest.raises(Stopped):
            for _ in session.decrypt_chunks(_encrypted_file(tmp_path)):
                pass
        assert time.monotonic() - started < 10
    assert sleepers(hanging_gpg_dir) - before == set()
