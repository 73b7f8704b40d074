"""One zip of a completed Vault export, from Cloud Storage to written events.

Every mbox member (zips inside the zip included) streams through the shared message
pipeline (mailsec/core/mailbox/files.py) straight from the download: nothing is
written to disk. The zip's resume state, kept in the export's checkpoint record:

    {"attempts": n, "members": {<member path>: <the pipeline's file entry>},
     "done": True, "bytes": n, "failed": True}

A member done before a restart is passed over; a member part-written goes on after
its last message written. The object's size and MD5 are checked once every member is
read (docs/vault_export.md, "How archives are read").
"""

from __future__ import annotations

import logging
import struct
import threading
import zipfile
import zlib
from datetime import datetime
from typing import Callable

import requests

from mailsec.core.google_auth import AuthError
from mailsec.core.http import HttpClient
from mailsec.core.mailbox.files import FileIndexer, new_entry, settled
from mailsec.core.mailbox.lifecycle import Lifecycle
from mailsec.core.mailbox.pipeline import NotAnMbox
from mailsec.vault.api import ApiError, ExportFile, VaultApi
from mailsec.vault.remote_zip import (
    IntegrityError,
    RemoteZipFile,
    TransferError,
    inflated_ahead,
    iter_members,
)

# what a damaged archive raises out of zipfile and zlib: the file's own failure,
# counted against its attempts
ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotAnMbox,
    NotImplementedError,
    RuntimeError,  # an encrypted member
    struct.error,
    ValueError,
    OSError,
)
# the way to the file failed (storage unreachable or refusing, a token refused, a
# transfer that could not be resumed): tried again on every run, never given up
# (docs/vault_export.md, "Behaviour on errors")
TRANSFER_ERRORS = (TransferError, AuthError, requests.RequestException)  # before OSError


def describe(error: BaseException) -> str:
    """A failure for a log line or an event: never a URL (it may carry a token)."""
    if isinstance(error, requests.RequestException):
        return type(error).__name__
    return str(error) if isinstance(error, ApiError) else f"{type(error).__name__}: {error}"


class ZipReader:
    def __init__(
        self,
        api: VaultApi,
        http: HttpClient,
        stream_http: HttpClient,
        files: FileIndexer,
        lifecycle: Lifecycle,
        save: Callable[[], None],
        stop: threading.Event,
        log: logging.Logger,
    ) -> None:
        self._api = api
        self._http = http
        self._stream_http = stream_http  # the download thread's own session
        self._files = files
        self._lifecycle = lifecycle
        self._save = save
        self._stop = stop
        self._log = log

    def read(self, request: dict, item: ExportFile, entry: dict, export_time: datetime) -> None:
        """Index every message of the zip not yet written; then `downloaded`, and the
        entry is done. A failure is an `error` event: counted (3 attempts) when the
        file is damaged, not counted when the transfer failed."""
        label = item.name.rsplit("/", 1)[-1]
        files = self._files
        if item.size is None or not item.bucket or not item.name:
            files.error(
                request, label, entry, "Vault lists the file without a size or a name", counted=True
            )
            return
        remote = RemoteZipFile(
            self._http,
            self._api.media_url(item.bucket, item.name),
            item.size,
            self._api.auth_headers,
            self._stop,
            stream_http=self._stream_http,
            stream_headers=lambda: self._api.auth_headers(self._stream_http),
            unauthorized=self._api.token_refused,
        )
        try:
            for path, opener in iter_members(remote):
                member_entry = entry["members"].setdefault(path, new_entry())
                if settled(member_entry):
                    continue
                with opener() as member:
                    chunks = inflated_ahead(member, self._stop)
                    try:
                        files.index(
                            request,
                            f"{label}/{path}",
                            member_entry,
                            chunks,
                            export_time,
                            "extracted",
                        )
                    finally:
                        chunks.close()  # the inflating thread ends before the member closes
            received = remote.finish(item.md5_hex)
        except IntegrityError as error:
            # the bytes are not Google's: every message of the file is read again
            # (the same event_ids where they were right)
            entry["members"] = {}
            files.error(request, label, entry, f"integrity: {error}", counted=True)
            return
        except TRANSFER_ERRORS as error:
            files.error(request, label, entry, f"download: {describe(error)}")
            return
        except ARCHIVE_ERRORS as error:
            files.error(request, label, entry, f"archive: {describe(error)}", counted=True)
            return
        finally:
            remote.close()
        entry["done"] = True
        entry["bytes"] = received
        self._lifecycle.emit(
            self._lifecycle.event(
                "downloaded",
                request,
                label,
                file_index=label,
                bytes=received,
                md5=item.md5_hex,
                messages=sum(m.get("messages", 0) for m in entry["members"].values()),
            )
        )
        self._save()
        self._log.info(
            "vault_progress export_id=%s file=%s downloaded_bytes=%d reconnects=%d",
            request["id"],
            label,
            received,
            remote.reconnects,
        )
