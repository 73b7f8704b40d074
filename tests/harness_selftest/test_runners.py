"""Self-tests of the harness runners, with tiny scripts built on the real splunklib."""

from __future__ import annotations

import ast
import base64
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from harness import modinput, pythons
from harness.alert import (
    decode_mv,
    encode_mv,
    read_results,
    run_alert,
)
from harness.modinput import ProtocolError, ScriptTimeout, StreamCorrupt, parse_stream
from harness.secret_scan import SecretScan
from harness.splunk_home import bin_script, install_app, log_dir

SCRIPTS = Path(__file__).parent / "scripts"
TESTS_DIR = Path(__file__).parent.parent
URI = "https://127.0.0.1:1"  # never contacted by the demo scripts
SESSION_KEY = "sk-3f9a0c7e1b2d4c6e8a0b1c2d3e4f5a6b"


def _site_packages_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for output/TA_mailsec: bin/ scripts, lib/ with splunklib, default/."""
    build = tmp_path_factory.mktemp("output") / "TA_mailsec"
    (build / "bin").mkdir(parents=True)
    for name in ("import_declare_test.py", "demo_input.py", "demo_alert.py"):
        shutil.copy(SCRIPTS / name, build / "bin" / name)
    (build / "lib").mkdir()
    (build / "lib" / "splunklib").symlink_to(_site_packages_dir("splunklib"))
    (build / "default").mkdir()
    (build / "default" / "alert_actions.conf").write_text(
        "[demo_alert]\nis_custom = 1\npayload_format = json\npython.version = python3\n"
    )
    return build


@pytest.fixture
def home(tmp_path: Path, build_dir: Path) -> Path:
    splunk_home = tmp_path / "splunk"
    app = install_app(build_dir, splunk_home)
    assert app == splunk_home / "etc" / "apps" / "TA_mailsec"
    assert log_dir(splunk_home).is_dir()
    return splunk_home


@pytest.fixture
def demo(home: Path) -> Path:
    return bin_script(home, "demo_input")


def test_install_app_options(tmp_path: Path, build_dir: Path) -> None:
    home = tmp_path / "h"
    app = install_app(build_dir, home, link_lib=True)
    assert (app / "lib").is_symlink() and (app / "lib" / "splunklib" / "__init__.py").is_file()
    assert (app / "bin" / "demo_input.py").is_file() and not (app / "bin").is_symlink()
    with pytest.raises(FileExistsError):
        install_app(build_dir, home)
    app = install_app(build_dir, home, replace=True)
    assert not (app / "lib").is_symlink() and (app / "lib" / "splunklib").is_symlink()
    assert (home / "var/lib/splunk/modinputs").is_dir()


# ---------------------------------------------------------------------------- modular input


def test_scheme(demo: Path) -> None:
    with pytest.raises(ValueError, match="not at <SPLUNK_HOME>/etc/apps/<app>/bin/"):
        modinput.scheme(SCRIPTS / "demo_input.py")  # splunktaucclib needs the app layout
    sch = modinput.scheme(demo)
    assert sch.title == "demo_input"
    assert sch.description == "Harness self-test input"
    assert sch.use_external_validation is True
    assert sch.use_single_instance is False
    assert sch.streaming_mode == "xml"
    assert sch.arg_names == ["mode", "count"]
    mode = sch.arg("mode")
    assert (mode.title, mode.required_on_create, mode.required_on_edit) == ("Mode", True, False)
    count = sch.arg("count")
    assert (count.data_type, count.required_on_create, count.required_on_edit) == (
        "NUMBER",
        False,
        True,
    )


def test_validate(demo: Path) -> None:
    bad = modinput.validate(
        demo, "daily", {"mode": "once", "count": "-5"}, server_uri=URI, session_key=SESSION_KEY
    )
    assert not bad.ok
    assert bad.returncode == 1
    assert bad.message == (
        "count: must be a positive whole number of events, got '-5' (input daily)"
    )
    assert b'<item name="daily">' in bad.stdin_xml
    good = modinput.validate(
        demo,
        "demo_input://daily",
        {"mode": "once", "count": "2"},
        server_uri=URI,
        session_key=SESSION_KEY,
    )
    assert (good.ok, good.message, good.returncode) == (True, None, 0)


def test_run_events_and_environment(demo: Path, home: Path) -> None:
    res = modinput.run(
        demo,
        {"daily": {"mode": "once", "index": "mail"}, "demo_input://other": {"mode": "once"}},
        server_uri=URI,
        session_key=SESSION_KEY,
        env={"HARNESS_PROBE": "probe-1", "REQUESTS_CA_BUNDLE": None},
        timeout=30,
    )
    res.assert_clean_exit()
    assert not res.killed and not res.orphaned_children
    assert len(res.events) == 6
    daily = [e for e in res.events if e.stanza == "demo_input://daily"]
    assert [e.time for e in daily] == [1700000000.25, 1700000001.25, 1700000002.25]
    assert [e.time_raw for e in daily] == ["1700000000.250", "1700000001.250", "1700000002.250"]
    assert {(e.sourcetype, e.index, e.source, e.done, e.unbroken) for e in daily} == {
        ("mailsec:demo", "mail", "demo_input://daily", True, True)
    }
    other = [e for e in res.events if e.stanza == "demo_input://other"]
    assert [e.index for e in other] == ["default"] * 3  # splunkd's default, merged in
    first = daily[0].json()
    assert first["seq"] == 0
    assert first["subject"] == 'Grüße <b>&</b> "q" ]]> \u2603'
    assert first["cwd"] == str(demo.parent)
    assert first["splunk_home"] == str(home)
    assert first["dont_write_bytecode"] is True
    assert first["venv_on_path"] is False  # -S: only the app's lib/ is importable
    assert first["metadata_keys"] == ["checkpoint_dir", "server_host", "server_uri", "session_key"]
    assert first["checkpoint_dir"] == str(home / "var/lib/splunk/modinputs/demo_input")
    assert first["params"] == {
        "mode": "once",
        "index": "mail",
        "host": modinput.DEFAULT_SERVER_HOST,
        "disabled": "0",
    }
    assert first["app"] == "TA_mailsec"
    assert (first["probe"], first["ca_bundle_set"]) == ("probe-1", False)
    assert (first["pythonpath"], first["pytest_env"]) == (None, [])  # runner's env not leaked
    assert not (demo.parent / "__pycache__").exists()


@pytest.mark.parametrize("version", pythons.SPLUNK_PYTHONS)
def test_runners_use_the_python_named_by_mailsec_script_python(
    demo: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    python = pythons.require(version)
    monkeypatch.setenv(modinput.SCRIPT_PYTHON_ENV, python)
    assert modinput.script_argv(demo)[:2] == [python, "-S"]
    res = modinput.run(demo, {"x": {"mode": "once", "count": "1"}}, server_uri=URI,
                       session_key=SESSION_KEY, timeout=30)  # fmt: skip
    res.assert_clean_exit()
    [event] = res.json()
    assert event["python"] == version
    assert event["venv_on_path"] is False
    assert event["script_python_env"] is False  # splunkd would not pass it on


def test_terminate_finishes_current_event(demo: Path) -> None:
    with modinput.start(demo, {"live": {"mode": "forever"}}, server_uri=URI, session_key="k") as p:
        assert len(p.wait_for(2, timeout=10)) >= 2
        assert p.running()
        assert p.terminate(timeout=5) == 0
        res = p.result()
    assert not res.truncated  # returned from stream_events: </stream> written
    seqs = [e.json()["seq"] for e in res.events]
    assert seqs == list(range(len(seqs)))
    flags = [e.json()["stop_requested"] for e in res.events]
    assert flags[-1] is True and not any(flags[:-1])
    assert "stopping after SIGTERM" in res.stderr


def test_kill_when_keeps_events_written_before(demo: Path) -> None:
    res = modinput.run(
        demo,
        {"live": {"mode": "forever"}},
        server_uri=URI,
        session_key="k",
        kill_when=lambda events: len(events) >= 2,
        timeout=10,
    )
    assert res.killed and res.returncode == -9
    assert res.truncated
    assert len(res.events) >= 2
    assert [e.json()["seq"] for e in res.events][:2] == [0, 1]


def test_kill_after_and_kill(demo: Path) -> None:
    res = modinput.run(
        demo, {"live": {"mode": "forever"}}, server_uri=URI, session_key="k", kill_after=0.5
    )
    assert res.returncode == -9 and res.killed and res.truncated
    assert len(res.events) == res.stdout_raw.count(b"</event>") <= 5
    with modinput.start(demo, {"live": {"mode": "forever"}}, server_uri=URI, session_key="k") as p:
        p.wait_for(1, timeout=10)
        assert p.kill() == -9
        assert p.result().truncated


def test_orphaned_children_are_reported_and_reaped(demo: Path) -> None:
    started = time.monotonic()
    res = modinput.run(demo, {"x": {"mode": "orphan"}}, server_uri=URI, session_key="k")
    assert time.monotonic() - started < 10
    res.assert_clean_exit()
    assert res.orphaned_children and len(res.events) == 3


def test_corrupted_stdout_raises(demo: Path) -> None:
    with pytest.raises(StreamCorrupt, match="does not start with <stream>") as info:
        modinput.run(demo, {"x": {"mode": "corrupt"}}, server_uri=URI, session_key="k")
    assert info.value.stdout_raw.startswith(b"debug: starting\n<stream>")
    assert info.value.returncode == 0


def test_datetime_time_raises(demo: Path) -> None:
    with pytest.raises(StreamCorrupt, match="not epoch seconds"):
        modinput.run(demo, {"x": {"mode": "badtime"}}, server_uri=URI, session_key="k")


def test_exception_in_stream_events_leaves_stream_open(demo: Path) -> None:
    res = modinput.run(demo, {"x": {"mode": "crash"}}, server_uri=URI, session_key="k")
    assert res.returncode == 1
    assert len(res.events) == 1
    assert res.truncated  # splunklib does not write </stream> when stream_events raises
    assert "simulated failure" in res.stderr
    with pytest.raises(AssertionError, match="exited 1"):
        res.assert_clean_exit()


# ---------------------------------------------------------------------------- stream parser

EV = b'<event stanza="s://a" unbroken="1"><time>1.5</time><data>{"a": 1}</data><done /></event>'


def test_parse_stream_complete_partial_and_empty() -> None:
    events, truncated = parse_stream(b"<stream>" + EV + EV + b"</stream>")
    assert len(events) == 2 and not truncated
    assert events[0].json() == {"a": 1} and events[0].time == 1.5
    events, truncated = parse_stream(b"<stream>" + EV + EV[:30])
    assert len(events) == 1 and truncated
    events, truncated = parse_stream(b"<stream>" + EV + b"</str")
    assert len(events) == 1 and truncated
    assert parse_stream(b"") == ([], False)
    assert parse_stream(b"<str") == ([], True)
    # incremental feeding gives the same events as one feed
    parser = modinput.StreamParser()
    whole = b"<stream>" + EV * 3 + b"</stream>"
    for i in range(len(whole)):
        parser.feed(whole[i : i + 1])
    assert parser.finish() is False and parser.error is None and len(parser.events) == 3


@pytest.mark.parametrize(
    ("stdout", "match"),
    [
        (b"<stream>" + EV + b"oops" + EV + b"</stream>", "text between events"),
        (b"<stream>" + EV + b"\n</stream>", "text between events"),
        (b"<stream>" + EV + b"</stream>\n", "after </stream>"),
        (b"<stream>" + EV + b"</stream><stream>" + EV, "malformed XML|after </stream>"),
        (b"<stream><event><data>x</data><extra/></event></stream>", "<extra> inside <event>"),
        (b"<stream><event><time>x</time><data>x</data></event></stream>", "not epoch seconds"),
        (b"<stream><event><time>1e9</time><data>x</data></event></stream>", "not epoch seconds"),
        (b"<stream><event><time>1</time></event></stream>", "without <data>"),
        (b"<stream><event><data>a\x01b</data></event></stream>", "malformed XML"),
        (b"<stream>" + EV + b"junk", "cut after non-event bytes"),
        (b" <stream></stream>", "does not start with <stream>"),
    ],
)
def test_parse_stream_rejects(stdout: bytes, match: str) -> None:
    with pytest.raises(StreamCorrupt, match=match):
        parse_stream(stdout)


# ---------------------------------------------------------------------------- alert action


def _splunktaucclib_mv_functions() -> dict:
    """parse_mv/encode_mv from splunktaucclib's cim_actions.py, without importing it
    (it imports Splunk's own ``splunk`` package, which only exists inside Splunk)."""
    path = _site_packages_dir("splunktaucclib") / "cim_actions.py"
    tree = ast.parse(path.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and "mv" in n.name]
    namespace: dict = {}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace


TRICKY = ["", "$", "$$x", "a;b", "$;$", "x$", "line1\nline2", "ü"]


def test_mv_encoding_matches_splunktaucclib() -> None:
    ns = _splunktaucclib_mv_functions()
    for values in (["a", "b"], TRICKY, ["only"], ["$a$", "b"]):
        assert encode_mv(values) == ns["encode_mv"](values)
        assert decode_mv(encode_mv(values)) == values
        assert ns["parse_mv"](encode_mv(values)) == values


def test_alert_payload_and_results_roundtrip(home: Path, tmp_path: Path) -> None:
    script = bin_script(home, "demo_alert")
    report = tmp_path / "report.json"
    results = [
        {"recipient": ["a@x.test", "b$c@x.test", "d@x.test"], "subject": "Hi", "count": 5},
        {"recipient": "solo@x.test", "subject": 'quote " and , comma', "count": 0},
        {"recipient": TRICKY, "subject": "multi\nline", "extra": "only here"},
    ]
    res = run_alert(
        script,
        configuration={"recipient": "ops@x.test", "report_path": str(report), "verbose": True},
        results=results,
        server_uri=URI,
        session_key=SESSION_KEY,
        search_name="RM send / test",
        timeout=30,
    )
    res.assert_ok()
    seen = json.loads(report.read_text())
    assert seen["argv"] == ["--execute"]
    assert seen["cwd"] == str(script.parent)
    payload = seen["payload"]
    assert set(payload) == {
        "app", "owner", "server_uri", "server_host", "session_key", "sid", "search_name",
        "results_file", "results_link", "search_uri", "configuration", "result",
    }  # fmt: skip
    assert payload == res.payload
    assert payload["configuration"] == {
        "recipient": "ops@x.test",
        "report_path": str(report),
        "verbose": "1",
    }
    assert payload["result"] == {
        "recipient": ["a@x.test", "b$c@x.test", "d@x.test"],
        "subject": "Hi",
        "count": "5",
    }
    assert (payload["app"], payload["owner"], payload["server_uri"]) == ("TA_mailsec", "admin", URI)
    assert payload["sid"].startswith("scheduler__admin__TA_mailsec__")
    assert payload["search_uri"].endswith("/saved/searches/" + quote("RM send / test", safe=""))
    results_file = Path(payload["results_file"])
    assert results_file == home / "var/run/splunk/dispatch" / payload["sid"] / "results.csv.gz"
    assert seen["header"] == [
        "recipient", "__mv_recipient", "subject", "__mv_subject",
        "count", "__mv_count", "extra", "__mv_extra",
    ]  # fmt: skip
    rows = seen["rows"]
    assert rows[0]["recipient"] == "a@x.test\nb$c@x.test\nd@x.test"
    assert rows[0]["__mv_recipient"] == "$a@x.test$;$b$$c@x.test$;$d@x.test$"
    assert rows[1]["__mv_recipient"] == ""
    parse_mv = _splunktaucclib_mv_functions()["parse_mv"]
    decoded = [
        {
            k: parse_mv(row["__mv_" + k]) if row["__mv_" + k] else v
            for k, v in row.items()
            if not k.startswith("__mv_")
        }
        for row in rows
    ]
    expected = [
        {
            "recipient": ["a@x.test", "b$c@x.test", "d@x.test"],
            "subject": "Hi",
            "count": "5",
            "extra": "",
        },
        {"recipient": "solo@x.test", "subject": 'quote " and , comma', "count": "0", "extra": ""},
        {"recipient": TRICKY, "subject": "multi\nline", "count": "", "extra": "only here"},
    ]
    assert decoded == expected
    assert read_results(results_file) == expected
    assert "sending to ops@x.test (3 results)" in res.log_text()


def test_alert_exit_code_conf_check_and_maxtime(home: Path, tmp_path: Path) -> None:
    script = bin_script(home, "demo_alert")
    common = dict(results=[{"a": "1"}], server_uri=URI, session_key=SESSION_KEY)
    res = run_alert(
        script, configuration={"report_path": str(tmp_path / "r"), "exit_code": 3}, **common
    )
    assert res.returncode == 3
    with pytest.raises(AssertionError, match="exited 3"):
        res.assert_ok()
    with pytest.raises(ScriptTimeout) as info:
        run_alert(
            script,
            configuration={"report_path": str(tmp_path / "r"), "sleep": 10},
            timeout=0.5,
            **common,
        )
    assert info.value.result.returncode < 0
    local = home / "etc/apps/TA_mailsec/local"
    local.mkdir()
    (local / "alert_actions.conf").write_text("[demo_alert]\npayload_format = xml\n")
    with pytest.raises(ProtocolError, match="payload_format"):
        run_alert(script, configuration={"report_path": str(tmp_path / "r")}, **common)


def test_results_file_is_gzip_csv(tmp_path: Path) -> None:
    from harness.alert import write_results

    path = write_results(tmp_path / "r.csv.gz", [{"f": ["x", "y"]}], mv_columns="needed")
    with gzip.open(path, "rt") as fh:
        assert fh.read() == 'f,__mv_f\n"x\ny",$x$;$y$\n'


# ---------------------------------------------------------------------------- secret scan

SECRET = 'Pa$$w0rd/with+odd=chars&"quote"'


def test_secret_scan_catches_encoded_forms(tmp_path: Path) -> None:
    root = tmp_path / "home"
    logs = root / "var/log/splunk"
    logs.mkdir(parents=True)
    (root / "etc/apps/TA_mailsec/local").mkdir(parents=True)
    basic = base64.b64encode(f"user:{SECRET}".encode()).decode()
    (logs / "a.log").write_text(
        f"line one\nraw {SECRET} here\nb64={base64.b64encode(SECRET.encode()).decode()}\n"
    )
    (logs / "b.log.1").write_text(f"Authorization: Basic {basic}\n")
    (logs / "c.log").write_text(f"url=https://h/?p={quote(SECRET, safe='')}\n")
    (logs / "d.log").write_text(json.dumps({"password": SECRET}) + "\n")
    (root / "etc/apps/TA_mailsec/local/ta_mailsec_account.conf").write_text(
        f"[acct]\npassword = {base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip('=')}\n"
    )
    (root / "etc/apps/TA_mailsec/local/passwords.conf").write_text(f"password = {SECRET}\n")
    (root / "bin.txt").write_text(SECRET)  # not matched by the default patterns
    scan = SecretScan()
    scan.add(SECRET, name="rm password")
    scan.scan_tree(root)
    where = {(f.label, f.line, f.form.split("@")[0].split("-")[0]) for f in scan.findings}
    assert where == {
        ("var/log/splunk/a.log", 2, "raw"),
        ("var/log/splunk/a.log", 3, "base64"),
        ("var/log/splunk/b.log.1", 1, "base64"),  # unaligned, inside user:password
        ("var/log/splunk/c.log", 1, "url"),
        ("var/log/splunk/d.log", 1, "json"),
        ("etc/apps/TA_mailsec/local/ta_mailsec_account.conf", 2, "base64"),
    }
    with pytest.raises(AssertionError) as info:
        scan.assert_clean()
    message = str(info.value)
    assert "var/log/splunk/a.log:2" in message and "<secret:rm password/raw>" in message
    for form in (SECRET, base64.b64encode(SECRET.encode()).decode(), basic, SECRET[:12]):
        assert form not in message


def test_secret_scan_clean_tree_events_and_short_values(tmp_path: Path) -> None:
    (tmp_path / "var/log/splunk").mkdir(parents=True)
    (tmp_path / "var/log/splunk/x.log").write_text("password=******\n")
    scan = SecretScan()
    scan.add(SECRET)
    scan.add(b"\x00\xffbinary-secret\x80")
    with pytest.warns(UserWarning, match="shorter than 8"):
        scan.add("short")
    assert scan.scan_tree(tmp_path) == []
    events, _ = parse_stream(
        b"<stream><event><data>hex=" + b"\x00\xffbinary-secret\x80".hex().encode() + b"</data>"
        b"</event></stream>"
    )
    assert [f.form for f in scan.scan_events(events)] == ["hex"]
    scan.reset()
    scan.assert_clean()


def test_secret_scan_finds_leaking_input(demo: Path, home: Path) -> None:
    res = modinput.run(demo, {"x": {"mode": "leak"}}, server_uri=URI, session_key=SESSION_KEY)
    res.assert_clean_exit()
    scan = SecretScan()
    scan.add(SESSION_KEY, name="session key")
    scan.scan_object("leaky run", res)
    assert scan.findings == []  # nothing in events/stdout/stderr
    scan.scan_tree(home)
    assert {(f.label, f.line) for f in scan.findings} == {
        ("var/log/splunk/ta_mailsec_demo.log", 1),
        ("var/log/splunk/ta_mailsec_demo.log", 2),  # base64 of admin:<key>
    }


def test_secret_scan_fixture_fails_the_test(tmp_path: Path) -> None:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import pytest

            SECRET = "inner-" + "secret-" + "0123456789"

            @pytest.fixture
            def late_writer(splunk_home):
                yield
                (splunk_home / "var/log/splunk/late.log").write_text("k=" + SECRET)

            def test_leaky(splunk_home, secret_scan):
                secret_scan.add(SECRET, name="api key")
                (splunk_home / "var/log/splunk/ta_mailsec_x.log").write_text("key " + SECRET)

            def test_clean(splunk_home, secret_scan):
                secret_scan.add(SECRET, name="api key")
                (splunk_home / "var/log/splunk/ta_mailsec_x.log").write_text("key ******")

            def test_late(secret_scan, late_writer):
                secret_scan.add(SECRET, name="api key")

            def test_direct_scan_counts(secret_scan):
                secret_scan.add(SECRET, name="api key")
                secret_scan.scan_text("an event", "data " + SECRET)
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR), PYTHONDONTWRITEBYTECODE="1")
    # the timeout only catches a hang: the inner run takes about a second on an idle machine
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "harness.fixtures", "-p", "no:cacheprovider",
         "-q", str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 failed, 2 passed, 1 error" in out, out
    assert "an event" in out
    assert "var/log/splunk/ta_mailsec_x.log:1" in out
    assert "var/log/splunk/late.log:1" in out
    assert "inner-secret-0123456789" not in out
