"""Find configured secrets where they must never be: logs, .conf files, events, stdout.

Each registered secret (>= 8 characters) is searched in its raw form and in the forms
that leak through code that "only" encodes it: base64 (standard and URL-safe, padded,
unpadded, and at the three byte alignments so that it is found inside a longer blob such
as ``Basic base64(user:password)``), hex, URL encoding (``quote``/``quote_plus``, upper and
lower case escapes), JSON string escaping (also double-escaped), XML escaping and
Python ``repr`` escaping.

Reports never contain a secret: each finding gives its location (label, line) and a snippet
in which every registered secret form is replaced by ``<secret:NAME/FORM>``.

Usage::

    scan = SecretScan()
    scan.add(password, name="rm password")
    scan.scan_tree(splunk_home)
    scan.scan_events(result.events)
    scan.assert_clean()
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

MIN_LENGTH = 8
MIN_NEEDLE = 8  # shorter derived forms (base64 cores of short secrets) are not searched

DEFAULT_PATTERNS: tuple[str, ...] = (
    "**/*.log",
    "**/*.log.*",  # rotated logs
    "**/*.conf",
    "**/local/**",
    "**/*.meta",
    "var/lib/splunk/modinputs/**",  # file checkpoints
)
# passwords.conf is where splunkd keeps secrets (encrypted) by design; a splunkd
# stand-in may keep them in clear there.
DEFAULT_EXCLUDE: tuple[str, ...] = ("**/passwords.conf",)


@dataclass(frozen=True)
class Finding:
    secret: str  # the secret's name, never its value
    form: str
    label: str
    line: Optional[int]
    snippet: str

    def __str__(self) -> str:
        where = f"{self.label}:{self.line}" if self.line is not None else self.label
        return f"secret {self.secret!r} ({self.form}) in {where}: {self.snippet}"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _b64_cores(raw: bytes, alphabet: str) -> dict[str, bytes]:
    """Base64 runs that appear whenever ``raw`` is encoded inside a longer byte string,
    whatever its offset (0, 1 or 2 mod 3) and whatever follows it."""
    encode = base64.urlsafe_b64encode if alphabet == "urlsafe" else base64.b64encode
    cores = {}
    n = len(raw)
    for shift in range(3):
        enc = encode(b"\0" * shift + raw + b"\0\0\0")
        first = -(-8 * shift // 6)  # first char made only of secret bits
        last = (8 * shift + 8 * n - 6) // 6  # last char made only of secret bits
        core = enc[first : last + 1]
        cores[f"base64-{alphabet}@{shift}"] = core
    return cores


def _forms(secret: bytes) -> dict[str, bytes]:
    forms: dict[str, bytes] = {"raw": secret}
    forms["base64"] = base64.b64encode(secret)
    forms["base64-nopad"] = base64.b64encode(secret).rstrip(b"=")
    forms["base64-urlsafe"] = base64.urlsafe_b64encode(secret)
    forms["base64-urlsafe-nopad"] = base64.urlsafe_b64encode(secret).rstrip(b"=")
    forms.update(_b64_cores(secret, "std"))
    forms.update(_b64_cores(secret, "urlsafe"))
    forms["hex"] = binascii.hexlify(secret)
    forms["HEX"] = binascii.hexlify(secret).upper()
    for name, enc in (("url", quote(secret, safe="")), ("url-plus", quote_plus(secret, safe=""))):
        forms[name] = enc.encode()
        forms[name + "-lower"] = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), enc).encode()
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        forms["json"] = json.dumps(text)[1:-1].encode()
        forms["json-utf8"] = json.dumps(text, ensure_ascii=False)[1:-1].encode()
        forms["json-twice"] = json.dumps(json.dumps(text)[1:-1])[1:-1].encode()
        forms["xml"] = xml_escape(text).encode()
        forms["xml-attr"] = xml_escape(text, {'"': "&quot;", "'": "&apos;"}).encode()
        forms["repr"] = repr(text)[1:-1].encode()
    else:
        forms["repr"] = repr(secret)[2:-1].encode()
    unique: dict[bytes, str] = {}
    for name, needle in forms.items():
        if len(needle) >= MIN_NEEDLE and needle not in unique:
            unique[needle] = name
    return {name: needle for needle, name in unique.items()}


class SecretScan:
    """Collects secrets and the places they were found. See the module docstring."""

    def __init__(
        self,
        *,
        min_length: int = MIN_LENGTH,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        context: int = 40,
    ) -> None:
        self.min_length = min_length
        self.context = context
        self._exclude = [_glob_regex(p) for p in exclude]
        self._secrets: dict[str, dict[str, bytes]] = {}  # name -> form -> needle
        self._values: set[bytes] = set()
        self.findings: list[Finding] = []
        self.watched_findings: list[Finding] = []  # those of the last scan_watched
        self._watched: list[tuple[str, Any, Any]] = []

    # registration -------------------------------------------------------------
    def add(self, secret: Union[str, bytes, None], name: Optional[str] = None) -> None:
        """Register a secret (and its encoded forms). Values shorter than ``min_length``
        are not searched (too many false positives); a warning says so."""
        if secret is None or secret in ("", b""):
            return
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if raw in self._values:
            return
        name = name or f"secret#{len(self._secrets) + 1}"
        if len(raw) < self.min_length:
            warnings.warn(
                f"SecretScan: {name!r} is shorter than {self.min_length} bytes and is not "
                "searched; use a longer test secret",
                stacklevel=2,
            )
            return
        if name in self._secrets:
            name = f"{name}#{len(self._secrets) + 1}"
        self._values.add(raw)
        self._secrets[name] = _forms(raw)

    @property
    def names(self) -> list[str]:
        return list(self._secrets)

    def exclude(self, pattern: str) -> None:
        """Skip files whose path (relative to the scanned root) matches ``pattern``."""
        self._exclude.append(_glob_regex(pattern))

    # things to scan at the end (the pytest fixture calls scan_watched) ------------
    def watch_tree(
        self,
        root: Union[str, Path],
        patterns: Optional[Iterable[str]] = None,
        prefix: str = "",
    ) -> None:
        self._watched.append(
            ("tree", Path(root), (tuple(patterns) if patterns else DEFAULT_PATTERNS, prefix))
        )

    def watch_file(self, path: Union[str, Path]) -> None:
        self._watched.append(("file", Path(path), None))

    def watch(self, label: str, source: Union[str, bytes, Callable[[], Any], Any]) -> None:
        """Scan ``source`` at the end: text/bytes, a RunResult/AlertResult/list of
        events, or a callable returning one of those."""
        self._watched.append(("obj", label, source))

    def scan_watched(self) -> list[Finding]:
        found: list[Finding] = []
        for kind, target, extra in self._watched:
            if kind == "tree":
                patterns, prefix = extra
                found += self.scan_tree(target, patterns, prefix=prefix)
            elif kind == "file":
                if Path(target).exists():
                    found += self.scan_file(target)
            else:
                value = extra() if callable(extra) else extra
                found += self.scan_object(target, value)
        return found

    # scanning -----------------------------------------------------------------
    def scan_text(self, label: str, text: Union[str, bytes]) -> list[Finding]:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        found: list[Finding] = []
        for name, forms in self._secrets.items():
            spans: list[tuple[int, int, str]] = []
            for form, needle in forms.items():
                start = data.find(needle)
                while start >= 0:
                    spans.append((start, start + len(needle), form))
                    start = data.find(needle, start + 1)
            spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
            covered_to = -1
            for start, end, form in spans:
                if end <= covered_to:  # inside an occurrence already reported
                    continue
                covered_to = max(covered_to, end)
                found.append(
                    Finding(
                        secret=name,
                        form=form,
                        label=label,
                        line=data.count(b"\n", 0, start) + 1,
                        snippet=self._snippet(data, start, end),
                    )
                )
        self.findings += found
        return found

    def scan_file(self, path: Union[str, Path], label: Optional[str] = None) -> list[Finding]:
        path = Path(path)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return []
        return self.scan_text(label or str(path), data)

    def scan_tree(
        self,
        root: Union[str, Path],
        patterns: Iterable[str] = DEFAULT_PATTERNS,
        *,
        prefix: str = "",
    ) -> list[Finding]:
        """Scan files under ``root`` whose relative path matches one of ``patterns``
        (``**`` spans directories; excluded patterns skipped). Symlinked files and
        directories are not followed. Findings are labelled ``prefix + relative path``."""
        root = Path(root)
        regexes = [_glob_regex(p) for p in patterns]
        found: list[Finding] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                rel = full.relative_to(root).as_posix()
                if full.is_symlink() or not any(r.match(rel) for r in regexes):
                    continue
                if any(r.match(rel) for r in self._exclude):
                    continue
                found += self.scan_file(full, label=prefix + rel)
        return found

    def scan_events(self, events: Iterable[Any], label: str = "event") -> list[Finding]:
        """Scan modular-input events (``StreamEvent`` or anything with ``data``), dicts
        (JSON-dumped) or strings."""
        found: list[Finding] = []
        for i, event in enumerate(events):
            if isinstance(event, (str, bytes)):
                text: Union[str, bytes] = event
            elif isinstance(event, dict):
                text = json.dumps(event)
            else:
                text = "\n".join(
                    f"{attr}={getattr(event, attr)}"
                    for attr in ("data", "source", "sourcetype", "host", "index", "stanza")
                    if getattr(event, attr, None) is not None
                )
            found += self.scan_text(f"{label}[{i}]", text)
        return found

    def scan_object(self, label: str, value: Any) -> list[Finding]:
        """Scan a RunResult (events, stdout, stderr), an AlertResult (stdout, stderr,
        modalert log), a list of events, or text."""
        if value is None:
            return []
        if isinstance(value, (str, bytes)):
            return self.scan_text(label, value)
        found: list[Finding] = []
        if hasattr(value, "events") and not callable(value.events):
            found += self.scan_events(value.events, f"{label}.event")
        if hasattr(value, "stdout_raw"):
            found += self.scan_text(f"{label}.stdout", value.stdout_raw)
        elif hasattr(value, "stdout"):
            found += self.scan_text(f"{label}.stdout", value.stdout)
        if hasattr(value, "stderr"):
            found += self.scan_text(f"{label}.stderr", value.stderr)
        if hasattr(value, "log_text"):
            found += self.scan_text(f"{label}.log", value.log_text())
        if not found and isinstance(value, (list, tuple)):
            found += self.scan_events(value, label)
        return found

    # reporting ----------------------------------------------------------------
    def _snippet(self, data: bytes, start: int, end: int) -> str:
        lo = max(0, start - self.context)
        hi = min(len(data), end + self.context)
        # widen to whole secret occurrences so that no partial secret is shown
        spans: list[tuple[int, int, str]] = []
        for name, forms in self._secrets.items():
            for form, needle in forms.items():
                s_lo = max(0, lo - len(needle))
                pos = data.find(needle, s_lo, min(len(data), hi + len(needle)))
                while pos >= 0:
                    spans.append((pos, pos + len(needle), f"{name}/{form}"))
                    pos = data.find(needle, pos + 1, min(len(data), hi + len(needle)))
        for s, e, _ in spans:
            if s < lo < e:
                lo = s
            if s < hi < e:
                hi = e
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out: list[str] = []
        pos = lo
        for s, e, tag in spans:
            if e <= pos or s >= hi:
                continue
            s = max(s, pos)
            out.append(data[pos:s].decode("utf-8", "replace"))
            out.append(f"<secret:{tag}>")
            pos = e
        out.append(data[pos:hi].decode("utf-8", "replace"))
        text = "".join(out)
        text = text.encode("unicode_escape").decode("ascii")  # newlines, control chars
        return ("..." if lo > 0 else "") + text + ("..." if hi < len(data) else "")

    def report(self) -> str:
        lines = [f"{len(self.findings)} secret occurrence(s) found:"]
        lines += [f"  - {f}" for f in self.findings]
        return "\n".join(lines)

    def assert_clean(self) -> None:
        """Raise AssertionError listing every finding (never the secret values)."""
        __tracebackhide__ = True
        if self.findings:
            raise AssertionError(self.report())

    def reset(self) -> None:
        self.findings.clear()
