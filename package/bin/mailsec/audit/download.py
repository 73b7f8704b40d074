"""Streaming download of an export file into the input's private work folder.

The encrypted file is written as it arrives (never held in memory) and checked
against Content-Length: urllib3 1.26 lets a cut-off body pass as complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from typing import Optional

import requests

from mailsec.core.files import private_dir
from mailsec.core.http import HttpClient, IncompleteBody, iter_body
from mailsec.core.runtime import Stopped

WORK_PREFIX = "ta_mailsec_audit_"


class DownloadError(Exception):
    pass


def work_root(input_name: str, base: Optional[str] = None) -> str:
    """The input's private work folder (mode 0700), emptied of whatever a killed
    earlier run left there: encrypted downloads and a throw-away GnuPG home."""
    from mailsec.audit.decrypt import stop_agent

    base = base or tempfile.gettempdir()
    # a short, fixed name per input: gpg-agent's socket lives in the GnuPG home
    # below it, and a Unix socket path may not exceed 107 bytes
    digest = hashlib.sha256(input_name.encode("utf-8")).hexdigest()[:12]
    # this user's own folder, not a link or another user's (private_dir refuses those)
    root = private_dir(os.path.join(base, WORK_PREFIX + digest))
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if entry.startswith("gnupg_"):
            stop_agent(path)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    return root


def download(
    http: HttpClient,
    url: str,
    destination: str,
    headers: Optional[dict] = None,
    stop: Optional[threading.Event] = None,
) -> int:
    """Stream `url` into a new private file `destination`; return its size.

    Every failure of the transfer is a DownloadError (the file is tried again on
    the next run), never an exception that would stop the run."""
    if not url:
        raise DownloadError("Google listed no URL for this file (numberOfFiles is larger)")
    try:
        response = http.get(url, headers=headers or {}, stream=True)
    except requests.RequestException as error:
        # the class only: the message repeats the URL, which may carry a token
        raise DownloadError(
            f"the file server could not be reached ({type(error).__name__})"
        ) from None
    with response:
        if response.status_code != 200:
            raise DownloadError(f"the file server answered HTTP {response.status_code}")
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter_body(response):
                    if stop is not None and stop.is_set():
                        raise Stopped("stop requested during download")
                    out.write(chunk)
                    size += len(chunk)
        except IncompleteBody as error:
            os.unlink(destination)
            raise DownloadError(str(error)) from None
        except requests.RequestException as error:
            os.unlink(destination)
            raise DownloadError(
                f"the transfer broke after {size} bytes ({type(error).__name__})"
            ) from None
        except BaseException:
            os.unlink(destination)
            raise
    return size
