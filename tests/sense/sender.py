"""An Apigee Sense notification sender: posts bot reports the way Sense does.

Facts it follows (seeds/002, docs/sense_listener.md): a report every 5 minutes per org and
environment, nothing when there is no activity; 1 to 300 client IPs per report
("maximum number of IPs"), most suspicious first; an optional header whose name
and value the administrator chooses; the body "a JSON-formatted string" holding
`{"text": {"metadata": {...}, "totalNumberOfBots": n, "bots": [...]}}`, with
`callCount` as a string and the documented sample's `botDetectedLast` without `T`
(`2018-10-0917:04:48Z`). Senders differ in how they encode it, and every variant
is here (ENCODINGS).

Run it against a listener:

    python tests/sense/sender.py https://127.0.0.1:8443/sense --bots 300 \\
        --key-name X-API-Key --key-env SENSE_KEY --ca ca.pem --encoding as_sense_sample
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import random
import ssl
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional
from urllib.parse import urlsplit

MAX_BOTS = 300
# Apigee Sense detection rules, as its console names them
BOT_REASONS = (
    "Flooder",
    "Content Robber",
    "Brute Guessor",
    "Static Content Robber",
    "Robotic Abuser",
    "Tor/Proxy User",
    "Abnormal Error Generator",
)
PLACES = (
    ("United States", "Los Angeles", "Their ISP"),
    ("United States", "Ashburn", "Amazon.com"),
    ("Germany", "Frankfurt am Main", "Hetzner Online GmbH"),
    ("Netherlands", "Amsterdam", "DigitalOcean"),
    ("Brazil", "Sao Paulo", "Claro S.A."),
    ("India", "Mumbai", "Reliance Jio"),
    ("Russia", "Moscow", "Rostelecom"),
    ("China", "Beijing", "China Unicom"),
    ("Italy", "Milan", "Telecom Italia"),
    ("Viet Nam", "Hanoi", "Viettel Group"),
)
URLS = ("/v1/my/url", "/v1/login", "/v1/products", "/v1/cart", "/v2/search?q=", "/oauth/token")

# Every encoding docs/sense_listener.md accepts. The first is the canonical form the others are
# compared with: numbers as numbers, timestamps with 'T', `text` an object.
ENCODINGS = (
    "object",
    "text_string",
    "body_string",
    "body_and_text_string",
    "counts_as_strings",
    "timestamp_without_t",
    "as_sense_sample",
)


def _no_t(timestamp: str) -> str:
    """'2018-10-09T17:04:48Z' as Sense's sample writes it: '2018-10-0917:04:48Z'."""
    return timestamp.replace("T", "", 1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_report(
    bots: int,
    *,
    org: str = "my-org",
    env: str = "prod",
    report_time: Optional[datetime] = None,
    message_id: Optional[str] = None,
    seed: int = 0,
) -> dict:
    """A report in canonical form with `bots` clients, most suspicious first."""
    if not 1 <= bots <= MAX_BOTS:  # Sense sends nothing when there is no activity
        raise ValueError(f"Sense sends 1 to {MAX_BOTS} IPs per report, not {bots}")
    rng = random.Random(seed)
    when = (report_time or datetime(2018, 10, 9, 17, 25, 12, tzinfo=timezone.utc)).replace(
        microsecond=0
    )
    counts = sorted((rng.randint(50, 300_000) for _ in range(bots)), reverse=True)
    entries = []
    for rank, count in enumerate(counts):
        country, city, isp = rng.choice(PLACES)
        entries.append(
            {
                # TEST-NET and benchmarking ranges: never a real client
                "ipAddress": f"198.{18 + rank // 250}.{rank % 250}.{rng.randint(1, 254)}",
                "botDetectedLast": _iso(when - timedelta(seconds=rng.randint(1, 290))),
                "ipIsp": isp,
                "ipCountry": country,
                "botReason": rng.sample(BOT_REASONS, rng.randint(1, 3)),
                "callCount": count,
                "topUrl": rng.choice(URLS),
                "ipCity": city,
            }
        )
    return {
        "text": {
            "metadata": {
                "org": org,
                "env": env,
                "reportTimestamp": _iso(when),
                # Sense's messageId is the report's epoch in milliseconds
                "messageId": message_id or str(int(when.timestamp() * 1000) + seed % 1000),
            },
            "totalNumberOfBots": bots,
            "bots": entries,
        }
    }


def _counts_as_strings(inner: dict) -> None:
    inner["totalNumberOfBots"] = str(inner["totalNumberOfBots"])
    for bot in inner["bots"]:
        bot["callCount"] = str(bot["callCount"])


def _timestamps_without_t(inner: dict) -> None:
    inner["metadata"]["reportTimestamp"] = _no_t(inner["metadata"]["reportTimestamp"])
    for bot in inner["bots"]:
        bot["botDetectedLast"] = _no_t(bot["botDetectedLast"])


def encode(report: dict, encoding: str = "as_sense_sample") -> bytes:
    """The request body for `report` (canonical form) in one of ENCODINGS."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; one of {', '.join(ENCODINGS)}")
    inner = copy.deepcopy(report["text"])
    text: object = inner
    body_as_string = False
    if encoding == "text_string":
        text = json.dumps(inner)
    elif encoding == "body_string":
        body_as_string = True
    elif encoding == "body_and_text_string":
        text = json.dumps(inner)
        body_as_string = True
    elif encoding == "counts_as_strings":
        _counts_as_strings(inner)
    elif encoding == "timestamp_without_t":
        _timestamps_without_t(inner)
    elif encoding == "as_sense_sample":
        # the documented sample: callCount a string, botDetectedLast without 'T',
        # reportTimestamp with it, all sent as a JSON-formatted string
        for bot in inner["bots"]:
            bot["callCount"] = str(bot["callCount"])
            bot["botDetectedLast"] = _no_t(bot["botDetectedLast"])
        body_as_string = True
    document = json.dumps({"text": text})
    if body_as_string:
        document = json.dumps(document)
    return document.encode("utf-8")


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict


class SenseSender:
    """Posts to a listener as Sense's notifier does: one POST per report, the key in
    the administrator's chosen header, JSON content type, TLS verified."""

    def __init__(
        self,
        url: str,
        *,
        key_name: Optional[str] = None,
        key_value: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        timeout: float = 10.0,
        keep_alive: bool = False,
    ) -> None:
        parts = urlsplit(url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path or "/"
        self.key_name, self.key_value = key_name, key_value
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._connection: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def post(
        self,
        body: bytes,
        *,
        method: str = "POST",
        path: Optional[str] = None,
        headers: Optional[dict] = None,
    ) -> Answer:
        request_headers = {"Content-Type": "application/json", "User-Agent": "Apigee-Sense"}
        if self.key_name and self.key_value is not None:
            request_headers[self.key_name] = self.key_value
        request_headers.update(headers or {})
        connection = self._connection or self._connect()
        try:
            connection.request(method, path or self.path, body=body, headers=request_headers)
            response = connection.getresponse()
            raw = response.read()
        except Exception:
            connection.close()
            self._connection = None
            raise
        if self.keep_alive and not response.will_close:
            self._connection = connection
        else:
            connection.close()
            self._connection = None
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode("utf-8", "replace")}
        return Answer(response.status, parsed, {k.lower(): v for k, v in response.getheaders()})

    def send_report(self, report: dict, encoding: str = "as_sense_sample") -> Answer:
        return self.post(encode(report, encoding))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--bots", type=int, default=5)
    parser.add_argument("--reports", type=int, default=1)
    parser.add_argument("--encoding", choices=ENCODINGS, default="as_sense_sample")
    parser.add_argument("--key-name", default="X-API-Key")
    parser.add_argument("--key-env", help="environment variable holding the key value")
    parser.add_argument("--ca", help="CA certificate (PEM) the listener's certificate chains to")
    args = parser.parse_args(argv)
    context = None
    if args.url.startswith("https://"):
        context = ssl.create_default_context(cafile=args.ca)
    key_value = os.environ.get(args.key_env) if args.key_env else None
    sender = SenseSender(args.url, key_name=args.key_name, key_value=key_value, ssl_context=context)
    start = datetime.now(timezone.utc)
    for n in range(args.reports):
        report = make_report(args.bots, report_time=start + timedelta(minutes=5 * n), seed=n)
        answer = sender.send_report(report, args.encoding)
        print(json.dumps({"status": answer.status, "answer": answer.body}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
