"""Vault export files as Google writes them, built in memory for the simulator.

support.google.com/vault/answer/6099459 ("Vault export contents", Gmail exports):
- `export_name-N.zip`: zip files of mbox files, "multiple files if the export
  includes messages from more than one account or if the file size exceeds ...
  10 GB for mbox"; file names end with an increment;
- `export_name-metadata.xml`: message metadata as it exists on Google's servers
  (labels, thread), to connect with the mbox by message;
- `export_name-results-count.csv`: accounts and the number of messages of each;
- `error.csv` / `export_name-account-exceptions.csv`: only when the export had errors;
- a file of MD5 checksums of every file of the export.
The issue asks for a zip holding another zip and ZIP64 archives as well: both are
legal forms of the format (PKWARE APPNOTE 4.3.14 ZIP64 end records, 4.5.3 the
ZIP64 extra field), and Info-ZIP itself writes ZIP64 for any streamed entry.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from xml.sax.saxutils import escape, quoteattr

_ZIP64_LOCK = threading.Lock()


@contextlib.contextmanager
def _zip64_everywhere() -> Iterator[None]:
    """zipfile writes ZIP64 records only past 4 GiB; with its limit at 0 every entry,
    offset and the end record are ZIP64 (sizes 0xFFFFFFFF, the values in the extra
    field), as for a real archive above 4 GiB, without writing 4 GiB."""
    with _ZIP64_LOCK:
        saved = zipfile.ZIP64_LIMIT
        zipfile.ZIP64_LIMIT = 0
        try:
            yield
        finally:
            zipfile.ZIP64_LIMIT = saved


def zip_bytes(
    members: list,
    *,
    zip64: bool = False,
    compression: int = zipfile.ZIP_DEFLATED,
    comment: bytes = b"",
) -> bytes:
    """A zip of (name, bytes) members."""
    out = io.BytesIO()
    guard = _zip64_everywhere() if zip64 else contextlib.nullcontext()
    with guard, zipfile.ZipFile(out, "w", compression=compression, compresslevel=6) as archive:
        for name, data in members:
            archive.writestr(name, data)
        archive.comment = comment
    return out.getvalue()


def mbox_zip(
    mboxes: list,
    *,
    form: str = "plain",
    comment: bytes = b"",
) -> bytes:
    """A Vault message-contents zip holding (name, mbox bytes) pairs. `form`:
    "plain"; "zip64"; "nested" (the mbox zip stored inside the outer zip);
    "nested_deflated" (the inner zip compressed again)."""
    if form == "plain":
        return zip_bytes(mboxes, comment=comment)
    if form == "zip64":
        return zip_bytes(mboxes, zip64=True, comment=comment)
    inner = zip_bytes(mboxes)
    compression = zipfile.ZIP_STORED if form == "nested" else zipfile.ZIP_DEFLATED
    return zip_bytes([("mail-1.zip", inner)], compression=compression, comment=comment)


def metadata_xml(export_name: str, rows: list) -> bytes:
    """The `-metadata.xml` file: one Document per message with its labels and
    thread, keyed by the file it is in and its Message-ID (rows: dicts with
    `file`, `message_id`, `account`, `labels`, `thread_id`, `subject`)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<Root><Batch>", "<Documents>"]
    for row in rows:
        parts.append(
            f"<Document DocID={quoteattr(row['message_id'])}><Tags>"
            f"<Tag TagName='#Author' TagDataType='Text' TagValue={quoteattr(row['account'])}/>"
            f"<Tag TagName='Labels' TagDataType='Text' TagValue={quoteattr(','.join(row['labels']))}/>"
            f"<Tag TagName='#ThreadId' TagDataType='Text' TagValue={quoteattr(row['thread_id'])}/>"
            f"<Tag TagName='#Subject' TagDataType='Text' TagValue={quoteattr(row['subject'])}/>"
            f"</Tags><Files><File FileType='Native'><ExternalFile FileName={quoteattr(row['file'])}/>"
            "</File></Files></Document>"
        )
    parts += ["</Documents>", "</Batch></Root>"]
    return (
        "\n".join(parts)
        .replace("<Root>", f"<Root Export={quoteattr(escape(export_name))}>")
        .encode()
    )


def results_count_csv(counts: dict) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Email", "Messages"])
    for account, count in counts.items():
        writer.writerow([account, count])
    return out.getvalue().encode()


def checksums(files: dict) -> bytes:
    """The export's MD5 checksum file: `<md5 hex>  <file name>` per file."""
    return "".join(
        f"{hashlib.md5(data).hexdigest()}  {name}\n"  # noqa: S324 (Google's checksum)
        for name, data in files.items()
    ).encode()
