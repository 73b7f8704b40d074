"""Run a modular input script exactly the way splunkd runs it.

Protocol (splunklib 2.1.1, ``splunklib/modularinput/script.py``):

* ``python <bin>/<type>.py --scheme``: the scheme XML on stdout, exit 0.
* ``python <bin>/<type>.py --validate-arguments``: ``<items>`` XML on stdin; on refusal the
  script writes ``<error><message>...</message></error>`` to stdout and exits 1.
* ``python <bin>/<type>.py``: ``<input>`` XML on stdin, then stdin is closed; the script
  writes ``<stream><event>...</event>...</stream>`` to stdout (nothing at all if it wrote
  no event) and its log lines to stderr (splunkd copies those to splunkd.log).

Every script runs with ``python=``, else ``$MAILSEC_SCRIPT_PYTHON`` (``make test`` sets it to each
Python Splunk ships), else ``sys.executable``, from its ``bin`` directory as the
working directory, with ``SPLUNK_HOME`` set and the test runner's ``PYTHONPATH`` removed. By
default the interpreter runs with ``-S`` (``isolated_site=True``) so that the test venv's
site-packages are not importable: the script sees the standard library, its ``bin`` dir and
whatever ``import_declare_test`` puts on ``sys.path`` (the app's ``lib/``), as inside Splunk,
where a library missing from ``lib/`` fails to import.

Usage::

    from harness import modinput
    sch = modinput.scheme(script)
    assert sch.arg("account").required_on_create
    res = modinput.validate(script, "daily", {"interval": "-5"}, server_uri=uri, session_key=key)
    assert not res.ok and "interval" in res.message
    out = modinput.run(script, {"daily": {"account": "acme", "index": "main"}},
                       server_uri=uri, session_key=key)
    out.assert_clean_exit()
    assert [e.json()["event_id"] for e in out.events] == [...]
    with modinput.start(script, {...}, server_uri=uri, session_key=key) as running:
        running.wait_for(3, timeout=10)
        assert running.terminate(timeout=10) == 0
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from harness.modinput_stream import (
    STREAM_CLOSE,
    STREAM_OPEN,
    HarnessError,
    ProtocolError,
    Scheme,
    SchemeArg,
    StreamCorrupt,
    StreamEvent,
    StreamParser,
    _excerpt,
    _tail,
    parse_scheme,
    parse_stream,
)
from harness.modinput_xml import DEFAULT_SERVER_HOST, input_xml, stanza_name, validation_xml
from harness.splunk_home import app_name_of, splunk_home_of
from harness.splunk_home import checkpoint_dir as _default_checkpoint_dir

# Parsing and the XML builders live in their own modules; harness.modinput is the
# import path for all of it.
__all__ = [
    "DEFAULT_SERVER_HOST",
    "STREAM_CLOSE",
    "STREAM_OPEN",
    "HarnessError",
    "ProtocolError",
    "Scheme",
    "SchemeArg",
    "StreamCorrupt",
    "StreamEvent",
    "StreamParser",
    "_excerpt",
    "_tail",
    "input_xml",
    "parse_scheme",
    "parse_stream",
    "stanza_name",
    "validation_xml",
]


# The interpreter every runner uses when the caller names none (docs/development.md).
SCRIPT_PYTHON_ENV = "MAILSEC_SCRIPT_PYTHON"

# Environment variables of the test runner that splunkd would not pass on.
_STRIPPED_ENV = (
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONUSERBASE",
    SCRIPT_PYTHON_ENV,
)  # fmt: skip
_STRIPPED_ENV_PREFIXES = ("PYTEST_",)

EnvOverrides = Optional[Mapping[str, Optional[str]]]


class ScriptTimeout(HarnessError, TimeoutError):
    """The script did not finish in time (it was killed). ``.result`` holds what it wrote."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


class StopTimeout(ScriptTimeout):
    """The input did not exit within the timeout after SIGTERM (it was then SIGKILLed)."""


# --------------------------------------------------------------------------- process plumbing


def script_env(splunk_home: Union[str, Path], env: EnvOverrides = None) -> dict[str, str]:
    """The environment a script gets from splunkd: this process's environment without the
    test runner's ``PYTHONPATH``/``PYTEST_*``, plus ``SPLUNK_HOME``, ``SPLUNK_ETC``,
    ``SPLUNK_DB``, ``PYTHONDONTWRITEBYTECODE=1``. ``env`` overrides; a value of None removes
    the variable (e.g. ``{"REQUESTS_CA_BUNDLE": None}``).
    """
    out = {
        k: v
        for k, v in os.environ.items()
        if k not in _STRIPPED_ENV and not k.startswith(_STRIPPED_ENV_PREFIXES)
    }
    home = str(Path(splunk_home).absolute())
    out.update(
        SPLUNK_HOME=home,
        SPLUNK_ETC=os.path.join(home, "etc"),
        SPLUNK_DB=os.path.join(home, "var", "lib", "splunk"),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
    )
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


def default_python() -> str:
    """The interpreter scripts run with when the caller names none."""
    return os.environ.get(SCRIPT_PYTHON_ENV) or sys.executable


def script_argv(
    script: Path,
    args: Iterable[str] = (),
    *,
    python: Optional[str] = None,
    isolated_site: bool = True,
) -> list[str]:
    argv = [python or default_python()]
    if isolated_site:
        argv.append("-S")
    argv.append(str(Path(script).absolute()))
    argv.extend(args)
    return argv


def _resolve(
    script: Union[str, Path], splunk_home: Optional[Union[str, Path]]
) -> tuple[Path, Path]:
    script = Path(script).absolute()
    if not script.is_file():
        raise FileNotFoundError(script)
    home = Path(splunk_home).absolute() if splunk_home is not None else splunk_home_of(script)
    return script, home


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def run_once(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: Optional[bytes],
    timeout: float,
) -> tuple[int, bytes, bytes, float]:
    """Run a short-lived script in its own process group; on timeout kill the group and
    raise ``ScriptTimeout``. Returns ``(returncode, stdout, stderr, seconds)``."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=str(cwd),
        env=dict(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        exited = proc.poll() is not None
        _kill_group(proc.pid)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = b"", b""
        why = (
            f"exited (rc={proc.returncode}) but its child processes kept stdout/stderr open"
            if exited
            else "still running"
        )
        raise ScriptTimeout(
            f"{' '.join(argv[-2:])} {why} after {timeout}s; killed. stderr tail: "
            f"{_tail(err.decode('utf-8', 'replace'))}",
            result=(proc.returncode, out, err),
        ) from None
    _kill_group(proc.pid)  # reap children it left behind in its group
    return proc.returncode, out, err, time.monotonic() - started


# ------------------------------------------------------------------ public: scheme/validate


def scheme(
    script: Union[str, Path],
    *,
    splunk_home: Optional[Union[str, Path]] = None,
    env: EnvOverrides = None,
    timeout: float = 30,
    python: Optional[str] = None,
    isolated_site: bool = True,
) -> Scheme:
    """Run ``<script> --scheme`` and parse the scheme (raises ``ProtocolError`` on a
    non-zero exit or anything but a scheme document on stdout)."""
    script, home = _resolve(script, splunk_home)
    rc, out, err, _ = run_once(
        script_argv(script, ["--scheme"], python=python, isolated_site=isolated_site),
        cwd=script.parent,
        env=script_env(home, env),
        stdin=b"",
        timeout=timeout,
    )
    if rc != 0:
        raise ProtocolError(
            f"--scheme exited {rc}; stdout: {_excerpt(out)}; stderr: {_tail(err.decode())}"
        )
    return parse_scheme(out)


@dataclass
class ValidationResult:
    ok: bool
    message: Optional[str]
    returncode: int
    stdout: str
    stderr: str
    stdin_xml: bytes = field(repr=False, default=b"")


def validate(
    script: Union[str, Path],
    stanza_name: str,
    params: Mapping[str, Any],
    *,
    server_uri: str,
    session_key: str,
    checkpoint_dir: Optional[Union[str, Path]] = None,
    server_host: str = DEFAULT_SERVER_HOST,
    splunk_home: Optional[Union[str, Path]] = None,
    env: EnvOverrides = None,
    timeout: float = 60,
    python: Optional[str] = None,
    isolated_site: bool = True,
) -> ValidationResult:
    """Run ``<script> --validate-arguments`` with the ``<items>`` XML on stdin.

    ``ok`` is ``returncode == 0``. A refusal must come back as
    ``<error><message>...</message></error>`` on stdout with a non-zero exit; ``message``
    holds its text (None when the script failed without one, e.g. a crash before
    ``validate_input``: see ``stderr``). Raises ``ProtocolError`` if stdout holds anything
    else (including output on success).
    """
    script, home = _resolve(script, splunk_home)
    input_type = script.stem
    ckpt = (
        checkpoint_dir if checkpoint_dir is not None else _default_checkpoint_dir(home, input_type)
    )
    xml_in = validation_xml(
        stanza_name,
        params,
        server_uri=server_uri,
        session_key=session_key,
        checkpoint_dir=ckpt,
        server_host=server_host,
    )
    rc, out, err, _ = run_once(
        script_argv(script, ["--validate-arguments"], python=python, isolated_site=isolated_site),
        cwd=script.parent,
        env=script_env(home, env),
        stdin=xml_in,
        timeout=timeout,
    )
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    message = None
    if out.strip():
        if rc == 0:
            raise ProtocolError(
                f"--validate-arguments succeeded but wrote to stdout: {_excerpt(out)}"
            )
        try:
            root = ET.fromstring(out)
        except ET.ParseError as exc:
            raise ProtocolError(
                f"--validate-arguments stdout is not XML ({exc}): {_excerpt(out)}"
            ) from exc
        if root.tag != "error" or root.find("message") is None:
            raise ProtocolError(
                f"--validate-arguments stdout is not <error><message>: {_excerpt(out)}"
            )
        message = root.findtext("message") or ""
    return ValidationResult(
        ok=rc == 0, message=message, returncode=rc, stdout=stdout, stderr=stderr, stdin_xml=xml_in
    )


# --------------------------------------------------------------------------- public: run/start


@dataclass
class RunResult:
    events: list[StreamEvent]
    returncode: Optional[int]
    stdout_raw: bytes = field(repr=False)
    stderr: str = field(repr=False)
    truncated: bool = False
    killed: bool = False  # the harness signalled it (kill/kill_after/kill_when/terminate)
    duration: float = 0.0
    orphaned_children: bool = False  # processes of its group were still alive after exit
    stdin_xml: bytes = field(repr=False, default=b"")

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def json(self) -> list[Any]:
        return [e.json() for e in self.events]

    def assert_clean_exit(self) -> None:
        """Exit 0 with ``</stream>`` written (or no output at all)."""
        if self.returncode != 0 or self.truncated:
            raise AssertionError(
                f"input exited {self.returncode} (stream truncated: {self.truncated}); "
                f"stderr tail:\n{_tail(self.stderr, 3000)}"
            )


class RunningInput:
    """A modular input process started as splunkd starts it (see ``start``)."""

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin: bytes,
        kill_when: Optional[Callable[[list[StreamEvent]], bool]] = None,
        kill_signal: int = signal.SIGKILL,
    ):
        self.argv = argv
        self.stdin_xml = stdin
        self._cond = threading.Condition()
        self._parser = StreamParser()
        self._stderr = bytearray()
        self._stdout_eof = False
        self._stderr_eof = False
        self._killed = False
        self._kill_when = kill_when
        self._kill_signal = kill_signal
        self._orphans = False
        self._started = time.monotonic()
        self._ended: Optional[float] = None
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True, name=f"stdout-{self.pid}"),
            threading.Thread(target=self._pump_stderr, daemon=True, name=f"stderr-{self.pid}"),
            threading.Thread(target=self._feed_stdin, daemon=True, name=f"stdin-{self.pid}"),
        ]
        for t in self._threads:
            t.start()

    # pumps --------------------------------------------------------------------
    def _feed_stdin(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(self.stdin_xml)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # splunkd closes stdin right after the XML

    def _pump_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                break
            with self._cond:
                new = self._parser.feed(chunk)
                events = list(self._parser.events) if new else None
                self._cond.notify_all()
            if events is not None and self._kill_when is not None and not self._killed:
                try:
                    fire = self._kill_when(events)
                except Exception:  # a broken predicate must not hang the reader
                    fire = True
                if fire:
                    self.send_signal(self._kill_signal)
        with self._cond:
            self._stdout_eof = True
            self._cond.notify_all()

    def _pump_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                break
            with self._cond:
                self._stderr += chunk
                self._cond.notify_all()
        with self._cond:
            self._stderr_eof = True
            self._cond.notify_all()

    # inspection ---------------------------------------------------------------
    @property
    def stderr(self) -> str:
        with self._cond:
            return self._stderr.decode("utf-8", "replace")

    @property
    def stdout_raw(self) -> bytes:
        with self._cond:
            return bytes(self._parser.raw)

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> list[StreamEvent]:
        """The complete events written so far (raises ``StreamCorrupt`` on bad stdout)."""
        with self._cond:
            self._raise_if_corrupt()
            return list(self._parser.events)

    def _raise_if_corrupt(self) -> None:
        if self._parser.error:
            raise StreamCorrupt(
                self._parser.error,
                stdout_raw=bytes(self._parser.raw),
                stderr=self._stderr.decode("utf-8", "replace"),
                returncode=self.proc.poll(),
            )

    def wait_for(
        self,
        predicate_or_count: Union[int, Callable[[list[StreamEvent]], bool]],
        timeout: float = 30,
    ) -> list[StreamEvent]:
        """Wait until ``count`` events arrived or ``predicate(events)`` is true; return the
        events. Raises ``TimeoutError`` (or ``AssertionError`` when the process exited
        first) with the stderr tail."""
        if isinstance(predicate_or_count, int):
            n = predicate_or_count

            def predicate(evs: list[StreamEvent]) -> bool:
                return len(evs) >= n
        else:
            predicate = predicate_or_count
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._raise_if_corrupt()
                events = list(self._parser.events)
                if predicate(events):
                    return events
                ended = self._stdout_eof
                remaining = deadline - time.monotonic()
                if not ended and remaining > 0:
                    self._cond.wait(min(remaining, 0.5))
                    continue
            if ended:
                try:
                    rc: Optional[int] = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    rc = None
                raise AssertionError(
                    f"input ended (rc={rc}) after {len(events)} events without meeting the "
                    f"condition; stderr tail:\n{_tail(self.stderr, 3000)}"
                )
            raise TimeoutError(
                f"condition not met within {timeout}s ({len(events)} events so far); "
                f"stderr tail:\n{_tail(self.stderr, 3000)}"
            )

    # control ------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        """SIGKILL goes to the whole process group; other signals to the process only
        (as splunkd signals the script it started)."""
        self._killed = True
        if sig == signal.SIGKILL:
            _kill_group(self.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM (what splunkd sends on disable/shutdown) and wait for the exit code.
        Raises ``StopTimeout`` after SIGKILLing the group if it did not exit in time."""
        if self.proc.poll() is None:
            self.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise StopTimeout(
                f"input did not exit within {timeout}s of SIGTERM; SIGKILLed. stderr tail:\n"
                f"{_tail(self.stderr, 3000)}",
                result=self.result(raise_corrupt=False),
            ) from None
        self._finish()
        return rc

    def kill(self) -> int:
        """SIGKILL the whole process group (a crash / power cut); return the exit code."""
        self.send_signal(signal.SIGKILL)
        rc = self.proc.wait(timeout=30)
        self._finish()
        return rc

    def wait(self, timeout: Optional[float] = None) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._finish()
        return rc

    def _finish(self) -> None:
        if self._ended is None:
            self._ended = time.monotonic()
        if _group_alive(self.pid):
            self._orphans = True
            _kill_group(self.pid)
        for t in self._threads:
            t.join(timeout=10)

    def result(self, raise_corrupt: bool = True) -> RunResult:
        """The run's outcome once the process has exited (waits for it)."""
        if self.proc.poll() is None:
            raise RuntimeError("the input is still running: terminate(), kill() or wait() first")
        self._finish()
        with self._cond:
            truncated = self._parser.finish()
            if raise_corrupt:
                self._raise_if_corrupt()
            return RunResult(
                events=list(self._parser.events),
                returncode=self.proc.returncode,
                stdout_raw=bytes(self._parser.raw),
                stderr=self._stderr.decode("utf-8", "replace"),
                truncated=truncated,
                killed=self._killed,
                duration=(self._ended or time.monotonic()) - self._started,
                orphaned_children=self._orphans,
                stdin_xml=self.stdin_xml,
            )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        else:
            self._finish()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> RunningInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start(
    script: Union[str, Path],
    stanzas: Mapping[str, Mapping[str, Any]],
    *,
    server_uri: str,
    session_key: str,
    checkpoint_dir: Optional[Union[str, Path]] = None,
    server_host: str = DEFAULT_SERVER_HOST,
    splunk_home: Optional[Union[str, Path]] = None,
    env: EnvOverrides = None,
    python: Optional[str] = None,
    isolated_site: bool = True,
    splunkd_defaults: bool = True,
    kill_when: Optional[Callable[[list[StreamEvent]], bool]] = None,
    kill_signal: int = signal.SIGKILL,
) -> RunningInput:
    """Start an input in run mode (own process group, ``<input>`` XML on stdin, stdin
    closed). Use as a context manager: leaving it SIGKILLs the group if still running.

    ``checkpoint_dir`` defaults to ``$SPLUNK_HOME/var/lib/splunk/modinputs/<type>``.
    ``kill_when(events)`` is evaluated each time new events arrive; when it returns True the
    harness sends ``kill_signal`` at once (best effort: the script may have written more
    by then).
    """
    script, home = _resolve(script, splunk_home)
    input_type = script.stem
    ckpt = (
        checkpoint_dir if checkpoint_dir is not None else _default_checkpoint_dir(home, input_type)
    )
    xml_in = input_xml(
        stanzas,
        input_type=input_type,
        server_uri=server_uri,
        session_key=session_key,
        checkpoint_dir=ckpt,
        server_host=server_host,
        app=_app_or_default(script),
        splunkd_defaults=splunkd_defaults,
    )
    return RunningInput(
        script_argv(script, python=python, isolated_site=isolated_site),
        cwd=script.parent,
        env=script_env(home, env),
        stdin=xml_in,
        kill_when=kill_when,
        kill_signal=kill_signal,
    )


def _app_or_default(script: Path) -> str:
    try:
        return app_name_of(script)
    except ValueError:
        return "TA_mailsec"


def run(
    script: Union[str, Path],
    stanzas: Mapping[str, Mapping[str, Any]],
    *,
    server_uri: str,
    session_key: str,
    checkpoint_dir: Optional[Union[str, Path]] = None,
    server_host: str = DEFAULT_SERVER_HOST,
    splunk_home: Optional[Union[str, Path]] = None,
    env: EnvOverrides = None,
    timeout: float = 60,
    kill_after: Optional[float] = None,
    kill_when: Optional[Callable[[list[StreamEvent]], bool]] = None,
    kill_signal: int = signal.SIGKILL,
    python: Optional[str] = None,
    isolated_site: bool = True,
    splunkd_defaults: bool = True,
) -> RunResult:
    """Run an input to completion (or until ``kill_after`` seconds / ``kill_when(events)``)
    and return its events. Raises ``StreamCorrupt`` if stdout is not a well-formed stream
    and ``ScriptTimeout`` (with ``.result``) if it runs past ``timeout``.
    """
    running = start(
        script,
        stanzas,
        server_uri=server_uri,
        session_key=session_key,
        checkpoint_dir=checkpoint_dir,
        server_host=server_host,
        splunk_home=splunk_home,
        env=env,
        python=python,
        isolated_site=isolated_site,
        splunkd_defaults=splunkd_defaults,
        kill_when=kill_when,
        kill_signal=kill_signal,
    )
    with running:
        deadline = time.monotonic() + timeout
        kill_at = time.monotonic() + kill_after if kill_after is not None else None
        while True:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at and running.running():
                running.send_signal(kill_signal)
                kill_at = None
            wait_until = deadline if kill_at is None else min(deadline, kill_at)
            try:
                running.proc.wait(timeout=max(0.0, wait_until - now))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    running.kill()
                    raise ScriptTimeout(
                        f"input still running after {timeout}s; killed. stderr tail:\n"
                        f"{_tail(running.stderr, 3000)}",
                        result=running.result(raise_corrupt=False),
                    ) from None
        return running.result()
