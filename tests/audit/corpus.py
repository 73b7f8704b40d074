"""A seeded mail corpus, built by hand (not with the code under test).

Each message is described by a `Spec` holding the values a correct parser must
find (decoded headers, attachment bytes, body text); `raw()` writes the message
bytes by hand so that the parser is checked against an independent source. The
corpus covers what real exports hold: multipart/mixed and /alternative, binary
and text attachments, RFC 2047 headers (adjacent encoded words included), raw
invalid bytes, body lines starting `From ` (mboxrd-quoted in the file),
X-Gmail-Labels, X-GM-THRID, a missing Date and very long headers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Optional


@dataclass
class Spec:
    message_id: str
    from_: str  # decoded
    from_raw: str  # as written in the header
    sender: str
    to: str
    recipients: list
    subject: str
    subject_raw: str
    date: Optional[datetime]
    labels: list
    thread_id: str
    body: str
    attachments: list = field(default_factory=list)  # (filename, content_type, bytes)
    cc: str = ""
    long_header: Optional[str] = None
    body_raw_extra: bytes = b""
    invalid_subject: bool = False

    def expected_fields(self) -> dict:
        return {
            "message_id": f"<{self.message_id}>",
            "from": self.from_,
            "sender": self.sender,
            "to": self.to,
            "cc": self.cc,
            "subject": self.subject,
            "gmail_labels": self.labels,
            "gmail_thread_id": self.thread_id,
            "attachment_count": len(self.attachments),
            "attachments": [
                {
                    "filename": name,
                    "content_type": ctype,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                for name, ctype, data in self.attachments
            ],
        }

    def raw(self) -> bytes:
        lines = [
            f"X-GM-THRID: {self.thread_id}",
            f"X-Gmail-Labels: {','.join(self.labels)}",
            f"Message-ID: <{self.message_id}>",
            f"From: {self.from_raw}",
            f"To: {self.to}",
        ]
        if self.cc:
            lines.append(f"Cc: {self.cc}")
        if self.date is not None:
            lines.append(f"Date: {format_datetime(self.date)}")
        lines.append(f"Subject: {self.subject_raw}")
        if self.long_header:
            lines.append(f"References: {self.long_header}")
        lines.append("MIME-Version: 1.0")
        head = "\n".join(lines).encode("ascii")
        if self.invalid_subject:
            head = head.replace(b"Subject: ", b"Subject: caf\xe9 \xff ", 1)
        body_text = self.body.encode("utf-8")
        if not self.attachments:
            return (
                head
                + b"\nContent-Type: text/plain; charset=utf-8\n"
                + b"Content-Transfer-Encoding: 8bit\n\n"
                + body_text
                + self.body_raw_extra
            )
        boundary = f"b1_{hashlib.md5(self.message_id.encode()).hexdigest()}"  # noqa: S324
        alt = f"b2_{boundary[3:]}"
        parts = [
            head + f'\nContent-Type: multipart/mixed; boundary="{boundary}"\n\n'.encode(),
            b"This is a multi-part message in MIME format.\n",
            f"--{boundary}\n".encode(),
            f'Content-Type: multipart/alternative; boundary="{alt}"\n\n'.encode(),
            f"--{alt}\n".encode(),
            b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n",
            _qp(body_text) + self.body_raw_extra,
            f"\n--{alt}\n".encode(),
            b"Content-Type: text/html; charset=utf-8\n\n<p>html version</p>\n",
            f"--{alt}--\n".encode(),
        ]
        for name, ctype, data in self.attachments:
            parts.append(f"\n--{boundary}\n".encode())
            if ctype.startswith("text/"):
                parts.append(
                    f'Content-Type: {ctype}; charset=utf-8\nContent-Disposition: attachment; filename="{name}"\n\n'.encode()
                    + data
                )
            else:
                encoded = base64.encodebytes(data)
                disposition = _filename_param(name)
                parts.append(
                    f"Content-Type: {ctype}\nContent-Transfer-Encoding: base64\n"
                    f"Content-Disposition: attachment; {disposition}\n\n".encode()
                    + encoded.rstrip(b"\n")
                )
        parts.append(f"\n--{boundary}--\n".encode())
        return b"".join(parts)


def _qp(data: bytes) -> bytes:
    import quopri

    return quopri.encodestring(data)


def _filename_param(name: str) -> str:
    if name.isascii():
        return f'filename="{name}"'
    encoded = base64.b64encode(name.encode()).decode()
    return f'filename="=?UTF-8?B?{encoded}?="'


FIRST = ["Ana", "Bruno", "Chloé", "Dmitri", "Eitan", "Fatima", "Gil", "Hana", "Ivo", "José"]
LAST = ["García", "Müller", "Cohen", "Rossi", "Nowak", "Silva", "Dubois", "Kim"]
LABELS = ["Inbox", "Important", "Opened", "Sent", "Category Updates", "Starred", "Archived"]


def _encoded_words(text: str) -> str:
    """Adjacent RFC 2047 words (split mid-text): they must join without a space."""
    data = text.encode("utf-8")
    half = len(text) // 2
    first, second = text[:half].encode(), text[half:].encode()
    assert first + second == data
    return (
        f"=?UTF-8?B?{base64.b64encode(first).decode()}?= "
        f"=?UTF-8?B?{base64.b64encode(second).decode()}?="
    )


def build(user: str, begin: datetime, count: int, seed: str, attachment_kib: tuple = ()) -> list:
    """`count` message specs for one user and window, the same for the same seed.

    Attachments are 200 B to 40 KB (fast tests), or log-uniform between the two
    `attachment_kib` bounds (the benchmark's realistic mailbox)."""
    rng = random.Random(seed)
    specs = []
    for n in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first} {last}"
        addr = f"{first.lower()[:3].encode('ascii', 'ignore').decode()}{n}@partner.example"
        display = name if name.isascii() else _encoded_words(name)
        from_raw = f"{display} <{addr}>"
        kind = n % 7
        subject = f"Report {n} — état des lieux ✓" if kind in (1, 4) else f"Weekly sync {n}"
        subject_raw = _encoded_words(subject) if not subject.isascii() else subject
        date = begin + timedelta(minutes=5 * n + 1)
        if kind == 5:
            date = None  # a message without a Date header
        else:
            date = date.astimezone(timezone(timedelta(hours=rng.choice([-5, 0, 2, 9]))))
        body_lines = [f"Hello {user}, line {i} of message {n}." for i in range(rng.randint(3, 12))]
        if kind in (0, 3):
            body_lines.insert(1, "From here on, the body has a line starting with From.")
            body_lines.insert(2, ">From an already quoted line")
        body = "\n".join(body_lines) + "\n"
        attachments = []
        if kind in (1, 2, 4, 6):
            if attachment_kib:
                low, high = (math.log(bound * 1024) for bound in attachment_kib)
                size = int(math.exp(rng.uniform(low, high)))
            else:
                size = rng.randint(200, 40000)
            attachments.append((f"scan-{n}.pdf", "application/pdf", rng.randbytes(size)))
        if kind == 4:
            attachments.append(("notes — été.txt", "text/plain", f"notes {n}\n".encode() * 20))
        spec = Spec(
            message_id=f"{n}.{seed[:8]}@mail.partner.example",
            from_=f"{name} <{addr}>",
            from_raw=from_raw,
            sender=addr,
            to=f"{user}",
            recipients=[user],
            subject=subject,
            subject_raw=subject_raw,
            date=date,
            labels=rng.sample(LABELS, rng.randint(1, 3)),
            thread_id=str(1700000000000000000 + rng.randint(0, 10**15)),
            body=body,
            attachments=attachments,
        )
        if kind == 3:
            spec.cc = "Team <team@partner.example>, other@partner.example"
        if kind == 6:
            # a very long header: a References chain of 400 ids (about 14 KB)
            spec.long_header = "\n ".join(f"<ref{i}.{n}@partner.example>" for i in range(400))
        if kind == 2:
            spec.invalid_subject = True
            spec.subject = "caf\ufffd \ufffd " + spec.subject
            spec.body_raw_extra = b"invalid bytes in the body: \xff\xfe\n"
        specs.append(spec)
    return specs


_FROM_LINE = re.compile(rb"(?m)^(>*From )")


def mbox(specs: list, when: datetime) -> bytes:
    """An mboxrd file: `From ` lines of bodies gain one `>`."""
    stamp = when.strftime("%a %b %d %H:%M:%S %Y")
    out = []
    for spec in specs:
        out.append(f"From {spec.sender} {stamp}\n".encode())
        out.append(_FROM_LINE.sub(rb">\1", spec.raw()))
        if not out[-1].endswith(b"\n"):
            out.append(b"\n")
        out.append(b"\n")
    return b"".join(out)
