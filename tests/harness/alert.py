"""Run a custom alert action script exactly the way splunkd runs it.

splunkd (``alert_actions.conf``: ``is_custom = 1``, ``payload_format = json``) writes the
search results to ``$SPLUNK_HOME/var/run/splunk/dispatch/<sid>/results.csv.gz`` and runs
``python <app>/bin/<action>.py --execute`` from the app's ``bin`` directory with a JSON
payload on stdin (then stdin is closed), killing the script after ``maxtime`` (5 minutes
by default).

Results file format (what splunktaucclib's ``ModularAction``/``parse_mv`` read): a gzipped
CSV with a header row; a multivalue field ``f`` has its values joined by newlines in column
``f`` and ``$v1$;$v2$`` (``$`` doubled inside values) in column ``__mv_f``; single values
leave ``__mv_f`` empty. By default every field gets its ``__mv_`` column, as in splunkd's
dispatch files, so a reader that does not skip ``__mv_*`` columns is caught.

Usage::

    from harness.alert import run_alert
    res = run_alert(script, configuration={"account": "rm1", "subject": "Hi"},
                    results=[{"recipient": ["a@x", "b@x"], "body": "hello"}],
                    server_uri=uri, session_key=key)
    res.assert_ok()
    assert "sent" in res.log_text()
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import quote

from harness.modinput import (
    DEFAULT_SERVER_HOST,
    EnvOverrides,
    ProtocolError,
    ScriptTimeout,
    _tail,
    run_once,
    script_argv,
    script_env,
)
from harness.splunk_home import dispatch_dir, log_dir, splunk_home_of

MV_PREFIX = "__mv_"
DEFAULT_MAXTIME = 300.0  # alert_actions.conf maxtime default: 5m

ResultValue = Union[str, int, float, bool, None, Sequence[Any]]


# --------------------------------------------------------------------------- multivalue


def encode_mv(values: Iterable[Any]) -> str:
    """``["a", "b$c"]`` -> ``$a$;$b$$c$`` (splunkd's ``__mv_`` encoding)."""
    return "$" + "$;$".join(_cell(v).replace("$", "$$") for v in values) + "$"


def decode_mv(text: str) -> list[str]:
    """Inverse of ``encode_mv``; same result as splunktaucclib ``cim_actions.parse_mv``."""
    if not text:
        return []
    if not (text.startswith("$") and text.endswith("$")):
        raise ValueError(f"not an __mv_ value: {text!r}")
    values: list[str] = []
    current: list[str] = []
    i, n = 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "$":
            if i + 1 < n and text[i + 1] == "$":
                current.append("$")
                i += 2
                continue
            values.append("".join(current))
            current = []
            if i + 1 == n:
                return values
            if text[i + 1 : i + 3] != ";$":
                raise ValueError(f"bad __mv_ separator at {i} in {text!r}")
            i += 3
            continue
        current.append(ch)
        i += 1
    raise ValueError(f"unterminated __mv_ value: {text!r}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple))


# --------------------------------------------------------------------------- results file


def _fieldnames(results: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in results:
        for key in row:
            if key.startswith(MV_PREFIX):
                raise ValueError(f"result field {key!r}: pass lists for multivalue fields")
            names.setdefault(key, None)
    return list(names)


def results_csv(results: Sequence[Mapping[str, ResultValue]], *, mv_columns: str = "all") -> str:
    """The CSV text of ``results.csv.gz``. ``mv_columns``: ``"all"`` (an ``__mv_`` column
    after every field, as splunkd writes) or ``"needed"`` (only for fields that have a
    multivalue somewhere)."""
    if mv_columns not in ("all", "needed"):
        raise ValueError("mv_columns must be 'all' or 'needed'")
    fields = _fieldnames(results)
    multi = {f for f in fields for row in results if _is_multi(row.get(f))}
    header: list[str] = []
    for f in fields:
        header.append(f)
        if mv_columns == "all" or f in multi:
            header.append(MV_PREFIX + f)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in results:
        out: dict[str, str] = {}
        for f in fields:
            value = row.get(f)
            if _is_multi(value):
                values = [_cell(v) for v in value]
                out[f] = "\n".join(values)
                out[MV_PREFIX + f] = encode_mv(values) if len(values) > 1 else ""
            else:
                out[f] = _cell(value)
                out[MV_PREFIX + f] = ""
        writer.writerow([out.get(h, "") for h in header])
    return buf.getvalue()


def write_results(
    path: Union[str, Path],
    results: Sequence[Mapping[str, ResultValue]],
    *,
    mv_columns: str = "all",
) -> Path:
    """Write ``results`` (dicts; a list value is a multivalue field) as splunkd's gzipped
    CSV. An empty ``results`` gives an empty (gzipped) file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = results_csv(results, mv_columns=mv_columns) if results else ""
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path


def read_results(path: Union[str, Path]) -> list[dict[str, Union[str, list[str]]]]:
    """Read a ``results.csv.gz`` back: multivalue fields as lists, ``__mv_`` columns folded."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: list[dict[str, Union[str, list[str]]]] = []
    for row in rows:
        decoded: dict[str, Union[str, list[str]]] = {}
        for key, value in row.items():
            if key.startswith(MV_PREFIX):
                continue
            mv = row.get(MV_PREFIX + key)
            decoded[key] = decode_mv(mv) if mv else value
        out.append(decoded)
    return out


# --------------------------------------------------------------------------- payload


def default_sid(search_name: str, owner: str = "admin", app: str = "TA_mailsec") -> str:
    """A scheduler-style sid (splunktaucclib sets ``action_mode=saved`` when the sid
    contains ``scheduler``)."""
    digest = hashlib.md5(search_name.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"scheduler__{owner}__{app}__RMD5{digest}_at_{int(time.time())}_{time.time_ns() % 1000}"


def _first_result(results: Sequence[Mapping[str, ResultValue]]) -> dict[str, Any]:
    if not results:
        return {}
    return {k: [_cell(x) for x in v] if _is_multi(v) else _cell(v) for k, v in results[0].items()}


def build_payload(
    *,
    configuration: Mapping[str, Any],
    results: Sequence[Mapping[str, ResultValue]],
    results_file: Union[str, Path],
    server_uri: str,
    session_key: str,
    search_name: str,
    sid: str,
    app: str = "TA_mailsec",
    owner: str = "admin",
    server_host: str = DEFAULT_SERVER_HOST,
) -> dict[str, Any]:
    """The JSON object splunkd writes to the script's stdin. ``configuration`` values are
    strings, as splunkd sends them (merged ``param.*`` of alert_actions.conf and the
    saved search); ``result`` is the first row (multivalue fields as lists)."""
    return {
        "app": app,
        "owner": owner,
        "results_file": str(results_file),
        "results_link": f"http://{server_host}:8000/app/{app}/@go?sid={quote(sid)}",
        "search_uri": f"/servicesNS/{quote(owner)}/{quote(app)}/saved/searches/"
        f"{quote(search_name, safe='')}",
        "server_host": server_host,
        "server_uri": server_uri,
        "session_key": session_key,
        "sid": sid,
        "search_name": search_name,
        "configuration": {k: _cell(v) for k, v in configuration.items()},
        "result": _first_result(results),
    }


# --------------------------------------------------------------------------- alert_actions.conf


def read_conf(path: Union[str, Path]) -> dict[str, dict[str, str]]:
    """Minimal .conf reader: ``[stanza]`` / ``key = value``, ``#`` comments, ``\\``
    line continuations. Keys before any stanza go to ``default``."""
    stanzas: dict[str, dict[str, str]] = {}
    current = stanzas.setdefault("default", {})
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + "\n" + lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stanzas.setdefault(stripped[1:-1].strip(), {})
            continue
        if "=" in stripped:
            key, _, value = stripped.partition("=")
            current[key.strip()] = value.strip()
    return stanzas


def check_alert_conf(script: Path) -> Optional[dict[str, str]]:
    """If the app ships ``alert_actions.conf``, check the action's stanza the way splunkd
    would use it: it must exist, be ``is_custom = 1`` and use ``payload_format = json``
    (otherwise splunkd sends XML). Returns the merged stanza (None when no conf exists)."""
    app = script.parent.parent
    merged: dict[str, str] = {}
    found = False
    for layer in ("default", "local"):
        conf = app / layer / "alert_actions.conf"
        if conf.is_file():
            found = True
            merged.update(read_conf(conf).get(script.stem, {}))
    if not found:
        return None
    if not merged:
        raise ProtocolError(f"alert_actions.conf has no [{script.stem}] stanza")
    if merged.get("is_custom", "").lower() not in ("1", "true"):
        raise ProtocolError(f"[{script.stem}] is_custom = {merged.get('is_custom')!r}, need 1")
    if merged.get("payload_format", "xml").lower() != "json":
        raise ProtocolError(
            f"[{script.stem}] payload_format = {merged.get('payload_format', 'xml (default)')}: "
            "splunkd would send an XML payload; set payload_format = json"
        )
    return merged


# --------------------------------------------------------------------------- run


@dataclass
class AlertResult:
    returncode: int
    stdout: str
    stderr: str
    payload: dict[str, Any]
    results_file: Path
    splunk_home: Path
    action: str
    duration: float = 0.0
    stdin: bytes = field(repr=False, default=b"")

    @property
    def log_file(self) -> Path:
        """``$SPLUNK_HOME/var/log/splunk/<action>_modalert.log`` (UCC's ModularAlertBase)."""
        return log_dir(self.splunk_home) / f"{self.action}_modalert.log"

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8") if self.log_file.exists() else ""

    def assert_ok(self) -> None:
        if self.returncode != 0:
            raise AssertionError(
                f"alert action exited {self.returncode}; stderr tail:\n{_tail(self.stderr, 3000)}"
                f"\nlog tail:\n{_tail(self.log_text(), 3000)}"
            )


def run_alert(
    script: Union[str, Path],
    *,
    configuration: Mapping[str, Any],
    results: Sequence[Mapping[str, ResultValue]],
    server_uri: str,
    session_key: str,
    search_name: str = "TA_mailsec harness alert",
    sid: Optional[str] = None,
    app: str = "TA_mailsec",
    owner: str = "admin",
    server_host: str = DEFAULT_SERVER_HOST,
    splunk_home: Optional[Union[str, Path]] = None,
    env: EnvOverrides = None,
    timeout: float = DEFAULT_MAXTIME,
    mv_columns: str = "all",
    payload_overrides: Optional[Mapping[str, Any]] = None,
    check_conf: bool = True,
    python: Optional[str] = None,
    isolated_site: bool = True,
) -> AlertResult:
    """Run ``python <script> --execute`` with splunkd's JSON payload on stdin.

    Writes ``results`` to ``$SPLUNK_HOME/var/run/splunk/dispatch/<sid>/results.csv.gz``.
    ``payload_overrides`` is applied last (a None value deletes the key), to test
    malformed payloads. ``timeout`` plays splunkd's ``maxtime``: past it the process group
    is killed and ``ScriptTimeout`` is raised (``.result`` is the AlertResult).
    """
    script = Path(script).absolute()
    if not script.is_file():
        raise FileNotFoundError(script)
    home = Path(splunk_home).absolute() if splunk_home is not None else splunk_home_of(script)
    if check_conf:
        check_alert_conf(script)
    sid = sid or default_sid(search_name, owner, app)
    results_file = write_results(
        dispatch_dir(home, sid) / "results.csv.gz", results, mv_columns=mv_columns
    )
    payload = build_payload(
        configuration=configuration,
        results=results,
        results_file=results_file,
        server_uri=server_uri,
        session_key=session_key,
        search_name=search_name,
        sid=sid,
        app=app,
        owner=owner,
        server_host=server_host,
    )
    for key, value in (payload_overrides or {}).items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    stdin = json.dumps(payload).encode("utf-8")

    def result(rc: Optional[int], out: bytes, err: bytes, seconds: float) -> AlertResult:
        return AlertResult(
            returncode=rc if rc is not None else -9,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            payload=payload,
            results_file=results_file,
            splunk_home=home,
            action=script.stem,
            duration=seconds,
            stdin=stdin,
        )

    try:
        rc, out, err, seconds = run_once(
            script_argv(script, ["--execute"], python=python, isolated_site=isolated_site),
            cwd=script.parent,
            env=script_env(home, env),
            stdin=stdin,
            timeout=timeout,
        )
    except ScriptTimeout as exc:
        rc, out, err = exc.result
        raise ScriptTimeout(str(exc), result=result(rc, out, err, timeout)) from None
    return result(rc, out, err, seconds)
