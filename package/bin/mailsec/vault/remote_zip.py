"""The mbox members of a zip in Cloud Storage, read without writing anything to disk.

Why Range reads with the standard library's zipfile, not a streaming unzip
(docs/vault_export.md, "How archives are read"): a zip's table of contents (the
central directory) is at its end. zipfile reads it first, through a handful of
`Range` requests for the object's last bytes; it then knows every member's name,
offset, sizes and CRC, and handles ZIP64 and data descriptors as a maintained
implementation of the format. The members are then read in offset order from ONE
streaming GET of the whole object, which also feeds the MD5 check of the file:
nothing is downloaded twice in the common case, and a done member (after a restart)
is passed over without being inflated. A streaming unzip that reads local headers
alone would have to trust sizes a data descriptor gives only after the data, and
a zip inside a zip needs its own table of contents anyway.

`RemoteZipFile` is the seekable file object zipfile reads:
- a read at the stream's position (or a little ahead of it) is served by the
  stream, which a reader thread keeps fetching into a bounded queue: download,
  MD5 and inflating/parsing overlap, and memory stays at QUEUE_CHUNKS * CHUNK;
- any other read (the table of contents, a zip inside a zip) is a Range request
  of its own, kept in a one-block cache;
- a dropped connection is resumed with `Range: bytes=<received>-`, and every
  response's bytes are counted against its Content-Length (urllib3 1.26 lets a
  cut-off body pass as complete).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import queue
import re
import struct
import threading
import zipfile
from collections.abc import Iterator
from typing import Callable, Optional

import requests

from mailsec.core.http import HttpClient
from mailsec.core.runtime import Stopped

CHUNK = 256 << 10
QUEUE_CHUNKS = 16  # 4 MiB of compressed bytes in flight
SIDE_BLOCK = 256 << 10  # a Range read fetches at least this much (the table of contents)
SKIP_AHEAD = 1 << 20  # a read this close ahead of the stream is served by the stream
MAX_RECONNECTS = 5
MEMBER_READ = 1 << 20
# zipfile reads the central directory whole, with the size the archive's end record
# gives: Vault's zips hold a handful of members, whose directory is a few KiB
MAX_CENTRAL_DIRECTORY = 64 << 20
_ZIP64_LOCATOR = struct.Struct(zipfile.structEndArchive64Locator)
_ZIP64_END = struct.Struct(zipfile.structEndArchive64)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_EOF = object()


class TransferError(Exception):
    """The object could not be read whole (unreachable, refused, cut short)."""


class IntegrityError(Exception):
    """The object's bytes are not what Vault lists (size or MD5), or the zip is damaged."""


class _SeekableBytes(io.RawIOBase):
    """A read-only, seekable file of `_size` bytes; a subclass reads at `_pos`."""

    _size = 0

    @property
    def size(self) -> int:
        return self._size

    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise OSError("seek before the start of the object")
        self._pos = position
        return position

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _wanted(self, size: Optional[int]) -> int:
        """How many bytes a read of `size` (None or below 0: all) gets from `_pos`."""
        left = max(0, self._size - self._pos)
        return left if size is None or size < 0 else min(size, left)


class RemoteZipFile(_SeekableBytes):
    """A read-only, seekable view of one Cloud Storage object (see the module doc)."""

    def __init__(
        self,
        http: HttpClient,
        url: str,
        size: int,
        headers: Callable[[], dict],
        stop: Optional[threading.Event] = None,
        stream_http: Optional[HttpClient] = None,
        stream_headers: Optional[Callable[[], dict]] = None,
        unauthorized: Optional[Callable[[dict], None]] = None,
    ) -> None:
        super().__init__()
        self._http = http
        # the reader thread's own session (a requests.Session is not shared across
        # threads), and its own way to the token (a renewal goes through that session)
        self._stream_http = stream_http or http
        self._stream_headers = stream_headers or headers
        self._url = url
        self._size = size
        self._headers = headers
        # told the headers of a 401 (a token revoked early): the request is made
        # once more with the headers asked again
        self._unauthorized = unauthorized
        self._stop = stop or threading.Event()
        self._pos = 0
        self._block_start = 0
        self._block = b""
        # the stream
        self._queue: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        self._thread: Optional[threading.Thread] = None
        self._cancel = threading.Event()
        self._stream_pos = 0  # offset of the first byte of `_pending`
        self._pending = b""
        self._pending_at = 0
        self._md5 = hashlib.md5()  # noqa: S324 (Vault's checksum, not a signature)
        self._received = 0
        self._error: Optional[BaseException] = None
        self.reconnects = 0
        self.range_reads = 0

    # -- reading ------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        size = self._wanted(size)
        if size == 0:
            return b""
        if self._thread is not None and 0 <= self._pos - self._stream_pos <= SKIP_AHEAD:
            data = self._from_stream(size)
        else:
            data = self._from_range(size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._drain_queue()
            self._thread.join(timeout=30)
            self._thread = None
        super().close()

    # -- Range reads ---------------------------------------------------------
    def _from_range(self, size: int) -> bytes:
        offset = self._pos - self._block_start
        if offset >= 0 and offset + size <= len(self._block):
            return self._block[offset : offset + size]
        start = self._pos
        if start + SIDE_BLOCK > self._size:  # near the end: the whole tail in one request
            start = max(0, self._size - max(SIDE_BLOCK, size))
            start = min(start, self._pos)
        end = min(self._size, max(self._pos + size, start + SIDE_BLOCK))
        self._block = self.read_range(start, end - start)
        self._block_start = start
        offset = self._pos - start
        return self._block[offset : offset + size]

    def read_range(self, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of the object, by Range requests (a broken
        transfer is resumed where it stopped)."""
        parts = []
        received = 0
        for _ in range(MAX_RECONNECTS + 1):
            self.range_reads += 1
            with self._get(start + received, start + length - 1) as response:
                try:
                    for chunk in response.iter_content(CHUNK):
                        received += len(chunk)
                        if received > length:
                            # not the range asked for: never held beyond what was asked
                            raise IntegrityError(
                                f"the storage server sent more than the {length} bytes "
                                "of the range asked for"
                            )
                        parts.append(chunk)
                except requests.RequestException:
                    pass  # resumed from the bytes received
            if received >= length:
                break
            self.reconnects += 1
        if received != length:
            raise TransferError(f"a Range read gave {received} of {length} bytes")
        return b"".join(parts)

    def _get(self, first: int, last: Optional[int], stream: bool = False) -> requests.Response:
        """The response to one Range request, from the download thread's session and
        token when `stream`."""
        http, headers = (
            (self._stream_http, self._stream_headers) if stream else (self._http, self._headers)
        )
        wanted = f"bytes={first}-" + ("" if last is None else str(last))
        for attempt in range(2):
            try:
                sent = headers()
                response = http.get(self._url, headers={**sent, "Range": wanted}, stream=True)
            except requests.RequestException as error:
                # the class only: the message repeats the URL
                raise TransferError(
                    f"the storage server could not be reached ({type(error).__name__})"
                ) from None
            if response.status_code != 401 or self._unauthorized is None or attempt:
                break
            response.close()
            self._unauthorized(sent)  # a token revoked early: once more with a new one
        if response.status_code == 416:
            response.close()
            raise IntegrityError(
                f"the object is shorter than the {self._size} bytes Vault lists "
                "(the storage server refused the range)"
            )
        if response.status_code not in (200, 206):
            response.close()
            raise TransferError(f"the storage server answered HTTP {response.status_code}")
        total = self._total_of(response, first)
        if total != self._size:
            response.close()
            raise IntegrityError(f"the object holds {total} bytes where Vault lists {self._size}")
        return response

    @staticmethod
    def _total_of(response: requests.Response, first: int) -> Optional[int]:
        if response.status_code == 200:
            length = response.headers.get("Content-Length", "")
            return int(length) if length.isascii() and length.isdigit() and first == 0 else None
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if match is None or match[3] == "*" or int(match[1]) != first:
            return None
        return int(match[3])

    # -- the stream ----------------------------------------------------------
    def start_stream(self) -> None:
        """Begin the one sequential GET of the whole object (MD5 over every byte)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._fetch, name="vault-download", daemon=True)
            self._thread.start()

    def _fetch(self) -> None:
        position = 0
        try:
            while position < self._size:
                if self._cancel.is_set():
                    return
                response = self._get(position, None, stream=True)
                with response:
                    try:
                        for chunk in response.iter_content(CHUNK):
                            self._md5.update(chunk)
                            position += len(chunk)
                            if position > self._size:
                                raise IntegrityError("the object is longer than Vault lists")
                            if not self._put(chunk):
                                return
                    except requests.RequestException:
                        pass  # resumed below from the bytes received
                if position < self._size:
                    self.reconnects += 1
                    if self.reconnects > MAX_RECONNECTS:
                        raise TransferError(
                            f"the transfer broke {MAX_RECONNECTS} times; "
                            f"{position} of {self._size} bytes received"
                        )
            self._received = position
            self._put(_EOF)
        except BaseException as error:  # handed to the reading thread
            self._put(error)

    def _put(self, item) -> bool:
        while not self._cancel.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _drain_queue(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _next_chunk(self) -> bytes:
        while True:
            if self._stop.is_set():
                raise Stopped("stop requested during the download")
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _EOF:
                self._queue.put(_EOF)  # every later read sees the end too
                return b""
            if isinstance(item, BaseException):
                self._queue.put(item)
                raise item
            return item

    def _from_stream(self, size: int) -> bytes:
        self.advance_to(self._pos)
        out = []
        wanted = size
        while wanted:
            available = len(self._pending) - self._pending_at
            if available == 0:
                self._pending = self._next_chunk()
                self._pending_at = 0
                if not self._pending:
                    break
                continue
            take = min(available, wanted)
            out.append(self._pending[self._pending_at : self._pending_at + take])
            self._pending_at += take
            self._stream_pos += take
            wanted -= take
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def advance_to(self, offset: int) -> None:
        """Pass the stream over the bytes before `offset` (they are still hashed)."""
        self.start_stream()
        while self._stream_pos < offset:
            available = len(self._pending) - self._pending_at
            if available == 0:
                self._pending = self._next_chunk()
                self._pending_at = 0
                if not self._pending:
                    raise TransferError("the object ended early")
                continue
            take = min(available, offset - self._stream_pos)
            self._pending_at += take
            self._stream_pos += take

    def finish(self, md5_hex: str) -> int:
        """Read the stream to its end and check the whole object; its size."""
        self.advance_to(self._size)
        if self._next_chunk() != b"":
            raise IntegrityError("the object is longer than Vault lists")
        digest = self._md5.hexdigest()
        if md5_hex and digest != md5_hex:
            raise IntegrityError(f"MD5 {digest} where Vault lists {md5_hex}")
        return self._received


class _Window(_SeekableBytes):
    """Bytes [start, start+length) of a RemoteZipFile: a zip stored inside a zip."""

    def __init__(self, base: RemoteZipFile, start: int, length: int) -> None:
        super().__init__()
        self._base = base
        self.start = start
        self._size = length

    def read(self, size: int = -1) -> bytes:
        size = self._wanted(size)
        self._base.seek(self.start + self._pos)
        data = self._base.read(size)
        self._pos += len(data)
        return data


def _data_offset(fp, info: zipfile.ZipInfo) -> int:
    """Where a member's data begins: after its local header (APPNOTE 4.3.7)."""
    fp.seek(info.header_offset)
    header = fp.read(zipfile.sizeFileHeader)
    fields = struct.unpack(zipfile.structFileHeader, header)
    if fields[0] != zipfile.stringFileHeader:
        raise zipfile.BadZipFile(f"bad local header for {info.filename!r}")
    return info.header_offset + zipfile.sizeFileHeader + fields[10] + fields[11]


def check_central_directory(fp, size: int) -> None:
    """Refuse (IntegrityError) a zip whose end record announces a central directory
    larger than the zip or than MAX_CENTRAL_DIRECTORY, before zipfile reads it whole.
    The end record is found as zipfile finds it (APPNOTE 4.3.16: the last signature
    within the 64 KiB a comment may take; 4.3.14-15: the ZIP64 end record before its
    locator); a zip without one is left to zipfile to refuse."""
    tail_length = min(size, zipfile.sizeEndCentDir + 0xFFFF)
    fp.seek(size - tail_length)
    tail = fp.read(tail_length)
    at = tail.rfind(zipfile.stringEndArchive)
    if at < 0 or len(tail) - at < zipfile.sizeEndCentDir:
        return
    # the fields: signature, 4 disk and entry counts, the directory's size, its offset...
    directory = struct.unpack(zipfile.structEndArchive, tail[at : at + zipfile.sizeEndCentDir])[5]
    records_length = _ZIP64_END.size + _ZIP64_LOCATOR.size
    if at >= records_length:  # already read (a zip inside a zip is not read twice)
        records = tail[at - records_length : at]
    elif size - tail_length + at >= records_length:
        fp.seek(size - tail_length + at - records_length)
        records = fp.read(records_length)
    else:
        records = b""
    if records[_ZIP64_END.size :].startswith(zipfile.stringEndArchive64Locator) and records[
        : _ZIP64_END.size
    ].startswith(zipfile.stringEndArchive64):
        # signature, record size, 2 versions, 2 disks, 2 entry counts, size, offset
        directory = _ZIP64_END.unpack(records[: _ZIP64_END.size])[8]
    if directory > min(size, MAX_CENTRAL_DIRECTORY):
        raise IntegrityError(
            f"the zip announces a table of contents of {directory} bytes "
            f"(the zip holds {size}; at most {MAX_CENTRAL_DIRECTORY} are read)"
        )


def is_mbox(name: str) -> bool:
    return name.lower().endswith(".mbox")


def iter_members(
    base: RemoteZipFile,
    fp=None,
    origin: Optional[int] = 0,
    prefix: str = "",
    size: Optional[int] = None,
) -> Iterator[tuple]:
    """(member path, opener) for every mbox in the zip, zips inside it included, in
    file order. `opener()` returns a file object of the member's inflated bytes; a
    member whose opener is not called is passed over (its bytes still hashed).
    `origin`: where `fp` begins in the object, when it is a zip stored in a zip;
    `size`: the length of `fp` (by default the object's)."""
    fp = base if fp is None else fp
    check_central_directory(fp, base.size if size is None else size)
    with zipfile.ZipFile(fp) as archive:
        for info in sorted(archive.infolist(), key=lambda item: item.header_offset):
            path = prefix + info.filename
            if info.is_dir():
                continue
            if origin is not None:
                base.advance_to(origin + info.header_offset)
            if info.filename.lower().endswith(".zip"):
                if info.compress_type == zipfile.ZIP_STORED and origin is not None:
                    start = _data_offset(fp, info)
                    window = _Window(base, origin + start, info.compress_size)
                    yield from iter_members(
                        base, window, origin + start, path + "/", info.compress_size
                    )
                else:
                    # a compressed zip inside the zip: zipfile seeks in the inflated
                    # stream (re-reading it); offsets in it are not the object's
                    with archive.open(info) as inner:
                        yield from iter_members(base, inner, None, path + "/", info.file_size)
                continue
            if is_mbox(info.filename):
                yield path, (lambda info=info: archive.open(info))


def chunks_of(member) -> Iterator[bytes]:
    while True:
        chunk = member.read(MEMBER_READ)
        if not chunk:
            return
        yield chunk


INFLATE_AHEAD = 4  # inflated chunks (of MEMBER_READ) waiting for the parser


def inflated_ahead(member, stop: threading.Event) -> Iterator[bytes]:
    """The member's inflated bytes, inflated by a thread of their own while the caller
    parses: zlib releases the GIL, so inflating overlaps the Python parsing on a host
    with a free core. At most INFLATE_AHEAD chunks wait; what the thread raises is
    raised here. Closing the generator (the caller must, in a `finally`) ends the
    thread before the member is closed."""
    chunks: queue.Queue = queue.Queue(INFLATE_AHEAD)
    cancel = threading.Event()

    def put(item) -> bool:
        while not cancel.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def inflate() -> None:
        try:
            for chunk in chunks_of(member):
                if not put(chunk):
                    return
            put(_EOF)
        except BaseException as error:  # handed to the parsing thread
            put(error)

    worker = threading.Thread(target=inflate, name="vault-inflate", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=0.5)
            except queue.Empty:
                if stop.is_set():
                    raise Stopped("stop requested while inflating") from None
                continue
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                chunks.get(timeout=0.2)
        worker.join()
