"""Proofpoint SER reporting API: the summary call of `ser_report` (docs/ser_report.md).

Answers are JSON, or TEXT holding uuencoded JSON (`begin ... end`); both are decoded
here. The `uu` module is gone from Python 3.13, so uudecoding uses `binascii.a2b_uu`
line by line. The token and the 401 retry are `SerTokenClient`'s (mailsec/ser/auth.py),
shared with `ser_usage`.
"""

from __future__ import annotations

import binascii
import json
from datetime import datetime
from typing import Any, Optional

from mailsec.core.timeutil import format_ser
from mailsec.ser.auth import TOKEN_CACHE_NAME, SerApiError, SerTokenClient, vendor_message

__all__ = [
    "SUMMARY_PATH",
    "TOKEN_CACHE_NAME",
    "SerApiError",
    "SerClient",
    "decode_answer",
    "uudecode",
]

SUMMARY_PATH = "/v1/sercustomer/report/summary"


def uudecode(text: str) -> bytes:
    """Decode a uuencoded document (`begin <mode> <name>` ... `end`).

    Tolerates what encoders do differently: CRLF line ends, a missing `end`, a space
    or a backquote for zero, and trailing padding characters (the same repair the
    removed `uu` module applied).
    """
    lines = iter(text.splitlines())
    if not any(line.startswith("begin ") for line in lines):
        raise ValueError("no 'begin' line in the uuencoded answer")
    out = bytearray()
    for line in lines:
        stripped = line.rstrip("\r\n")
        if stripped.strip() == "end":
            break
        if not stripped:
            continue
        try:
            chunk = binascii.a2b_uu(stripped)
        except binascii.Error:
            # Some encoders pad lines beyond their data: decode only the bytes the
            # length character announces.
            length = ((ord(stripped[0]) - 32) & 63) * 4 + 5
            chunk = binascii.a2b_uu(stripped[: length // 3])
        if not chunk and (ord(stripped[0]) - 32) & 63 == 0:
            break  # the zero-length line before `end`
        out.extend(chunk)
    return bytes(out)


def decode_answer(body: bytes) -> Any:
    """A summary answer as Python data, from JSON or from uuencoded JSON."""
    text = body.decode("utf-8-sig", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("begin "):
        text = uudecode(stripped).decode("utf-8-sig", errors="replace")
    return json.loads(text)


class SerClient(SerTokenClient):
    def summary(self, start: Optional[datetime], end: Optional[datetime]) -> Any:
        """The summary for [start, end); None for either uses the API's default
        (license_start, now)."""
        params = {}
        if start is not None:
            params["startTimeStamp"] = format_ser(start)
        if end is not None:
            params["endTimeStamp"] = format_ser(end)
        url = self.account.api_url + SUMMARY_PATH
        response = self.authorized(
            "GET", url, params=params, accept="application/json, text/plain;q=0.9"
        )
        what = "summary {} to {}".format(
            params.get("startTimeStamp", "license_start"), params.get("endTimeStamp", "now")
        )
        if response.status_code != 200:
            raise SerApiError(what, response.status_code, vendor_message(response))
        try:
            return decode_answer(response.content)
        except (ValueError, binascii.Error) as error:
            raise SerApiError(what, None, f"neither JSON nor uuencoded JSON ({error})") from None
