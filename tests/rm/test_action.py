"""The action against the RM simulator over mutual TLS: every code, local refusals,
certificate problems, transport failures and the retry policy."""

from __future__ import annotations

import base64
import http.client
import json
import ssl

import pytest

from harness.certs import TestCA
from mailsec.rm import codes
from rm.conftest import SENDER, account_fields, leftover_cert_dirs
from rm.simulator import WhitelistEntry

EVENT_FIELDS = {
    "time", "search_name", "sid", "account", "code", "range", "explanation", "action_to_take",
    "recipient_count", "recipient_domains", "latency_ms", "attempts", "sent", "http_status",
    "detail", "event_id",
}  # fmt: skip


def assert_reported(run, code):
    """The code, its explanation and its measure are in the event and the log."""
    info = codes.describe(code)
    event = run.event
    assert set(event) >= EVENT_FIELDS
    assert (event["code"], event["range"]) == (code, info.range)
    assert event["explanation"] == info.explanation
    assert event["action_to_take"] == info.action_to_take
    outcome_lines = [line for line in run.log.splitlines() if "| outcome " in line]
    assert len(outcome_lines) == 1
    assert f'code="{code}"' in outcome_lines[0]
    assert json.dumps(info.explanation) in outcome_lines[0]
    assert json.dumps(info.action_to_take) in outcome_lines[0]
    assert "Traceback" not in run.log


def test_done_delivers_and_records(run_action, sim, private_tmpdir):
    run = run_action({"to": "ops@corp.example, noc@other.example"})
    assert run.status == 0
    assert_reported(run, "DONE")
    event = run.event
    assert event["recipient_count"] == 2
    assert event["recipient_domains"] == ["corp.example", "other.example"]
    assert event["attempts"] == 1 and event["sent"] is True and event["http_status"] == 200
    assert event["latency_ms"] >= 0
    assert event["search_name"] == "Disk full"
    assert event["sid"] == "scheduler__admin__search__RMD5_at_1700000000_1"
    assert event["sender"] == SENDER and event["whitelist_name"] == "SplunkAlerts"
    assert run.stash_headers == [
        "***SPLUNK*** index=mail_audit sourcetype=rm:mail:send source=rm_send_mail"
    ]
    [mail] = sim.mailbox
    assert mail["toAddresses"] == ["ops@corp.example", "noc@other.example"]
    assert mail["subject"] == "Splunk alert: disk full" and mail["important"] is True
    [request] = sim.requests
    assert request.path == "/rest/mail/sendQueue/SplunkAlerts"
    assert request.headers["content-type"] == "application/json"
    assert set(request.json()) == {"subject", "text", "html", "important", "toAddresses"}
    assert leftover_cert_dirs(private_tmpdir) == []


def _no_owner(sim):
    sim.registry.owners.clear()


def _not_owned(sim):
    sim.registry.owners["splunk-rm"].addresses = {"someone-else@corp.example"}


def _no_entry(sim):
    sim.registry.whitelist.clear()


def _other_name(sim):
    sim.registry.whitelist[0].name = "GreetingWhitelist"


def _other_ip(sim):
    sim.registry.whitelist[0].ip = "10.20.30.40"


def _twice(sim):
    sim.registry.whitelist.append(WhitelistEntry("SplunkAlerts", SENDER))


def _other_org_host(sim):
    sim.registry.organisations["corp"] = {"rm.othercorp.example"}


def _entry_host(sim):
    sim.registry.whitelist[0].server_hostname = "rm.corp.example"


def _undeliverable(sim):
    sim.registry.undeliverable.add("ops@corp.example")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (_no_owner, "MISSING_ANY_PERMISSION"),
        (_not_owned, "MISSING_ANY_PERMISSION"),
        (_no_entry, "HAS_PERMISSION_BUT_MISSING_WHITELIST_ENTRY"),
        (_other_name, "HAS_PERMISSION_HAS_WHITELIST_BUT_NONE_MATCH_NAME"),
        (_other_ip, "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_BUT_IP_MISMATCH"),
        (_twice, "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_AMBIGUOUS"),
        (
            _other_org_host,
            "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_UNIQUE_BUT_SERVERHOSTNAME_MISMATCH",
        ),
        (
            _entry_host,
            "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_UNIQUE_BUT_SERVERHOSTNAME_MISMATCH",
        ),
        (_undeliverable, "ERROR_CHECK_MAIL_SEND_TRIAL"),
    ],
)
def test_each_rm_refusal_reaches_event_and_log(run_action, sim, change, code):
    change(sim)
    run = run_action()
    assert_reported(run, code)
    assert run.status == 3
    assert run.event["attempts"] == 1  # an answer is never retried
    assert sim.mailbox == []


@pytest.mark.parametrize(
    "code",
    [
        "RECIPIENTS_ADDRESS_MISS_AT_SIGN",
        "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE",
        "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY",
        "TEXT_OR_HTML_MUST_BE_SET",
        "REQUEST_CONTENT_TYPE_MUST_BE_JSON",
    ],
)
def test_rm_validation_codes_reach_event_and_log(run_action, sim, code):
    # Local validation stops these before RM; RM answering them anyway (a rule of
    # RM's stricter than ours) must still be reported with its measure.
    sim.fail_next(f"code:{code}")
    run = run_action()
    assert_reported(run, code)
    assert run.status == 3


def test_simulator_judges_rm_validation_itself(sim, client_cert, ca, tmp_path):
    """The simulator's own rules for what the action never sends."""
    chain, key = client_cert.write(tmp_path)
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.load_cert_chain(chain, key)

    def post(body: bytes, content_type="application/json") -> str:
        connection = http.client.HTTPSConnection("localhost", sim.port, context=context)
        connection.request(
            "POST", "/rest/mail/sendQueue/SplunkAlerts", body, {"Content-Type": content_type}
        )
        return json.loads(connection.getresponse().read())["code"]

    mail = {"subject": "s", "text": "t", "html": "", "important": False}
    assert post(b"subject=s", "application/x-www-form-urlencoded") == (
        "REQUEST_CONTENT_TYPE_MUST_BE_JSON"
    )
    assert post(b"{not json") == "REQUEST_CONTENT_TYPE_MUST_BE_JSON"
    assert post(json.dumps({**mail, "toAddresses": ["ops"]}).encode()) == (
        "RECIPIENTS_ADDRESS_MISS_AT_SIGN"
    )
    assert post(json.dumps({**mail, "toAddresses": ["Ops@corp.example"]}).encode()) == (
        "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE"
    )
    ok = ["ops@corp.example"]
    assert post(json.dumps({**mail, "subject": "", "toAddresses": ok}).encode()) == (
        "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"
    )
    assert post(json.dumps({**mail, "text": "", "toAddresses": ok}).encode()) == (
        "TEXT_OR_HTML_MUST_BE_SET"
    )
    assert post(json.dumps({**mail, "toAddresses": ok}).encode()) == "DONE"


def test_unknown_code_is_reported_as_it_came(run_action, sim):
    sim.fail_next("code:MAILBOX_FULL_TRY_TOMORROW")
    run = run_action()
    assert run.event["code"] == "MAILBOX_FULL_TRY_TOMORROW"
    assert run.event["range"] == "unknown"
    assert 'code="MAILBOX_FULL_TRY_TOMORROW"' in run.log
    assert run.status == 4


@pytest.mark.parametrize(
    ("configuration", "code"),
    [
        ({"to": "ops.corp.example"}, "RECIPIENTS_ADDRESS_MISS_AT_SIGN"),
        ({"to": " , ,"}, "RECIPIENTS_MISSING"),
        ({"subject": "   "}, "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"),
        ({"text": "", "html": " "}, "TEXT_OR_HTML_MUST_BE_SET"),
        ({"max_rows": "lots"}, "INVALID_PARAMETER"),
        ({"include_results": "csv"}, "INVALID_PARAMETER"),
    ],
)
def test_local_validation_sends_nothing(run_action, sim, configuration, code):
    run = run_action(configuration)
    assert_reported(run, code)
    assert run.status == 2
    assert run.event["sent"] is False and run.event["attempts"] == 0
    assert run.account_reads == 0  # not even splunkd was asked
    assert sim.requests == [] and sim.connections == 0


def test_recipients_lower_cased_with_a_warning(run_action, sim):
    run = run_action({"to": " Ops@Corp.Example ,, noc@corp.example"})
    assert run.event["code"] == "DONE"
    assert sim.mailbox[0]["toAddresses"] == ["ops@corp.example", "noc@corp.example"]
    [warning] = [line for line in run.log.splitlines() if "log_level=WARNING" in line]
    assert "lower-cased" in warning and "ops@corp.example,noc@corp.example" in warning


def test_no_warning_when_recipients_are_already_clean(run_action, sim):
    run = run_action({"to": "ops@corp.example"})
    assert "log_level=WARNING" not in run.log


def test_results_table_in_both_bodies_with_html_escaped(run_action, sim, tmp_path):
    from rm.test_units import write_results

    path = write_results(
        tmp_path / "results.csv.gz",
        ["host", "message", "__mv_host", "__mv_message"],
        [["web1", '<img src=x onerror="alert(1)">', "", ""], ["web2", "fine", "", ""]],
    )
    run = run_action({"include_results": "table", "max_rows": "1"}, results_file=path)
    assert run.event["code"] == "DONE" and run.event["result_rows"] == 1
    [mail] = sim.mailbox
    assert mail["text"].startswith("The disk is full.\n\nFirst 1 of 2 results:")
    assert '<img src=x onerror="alert(1)">' in mail["text"]  # plain text stays as it is
    assert "<img" not in mail["html"].replace("<p>The disk is full.</p>", "")
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in mail["html"]
    assert "web2" not in mail["html"]


@pytest.mark.parametrize(
    ("account_change", "code"),
    [
        ({"certificate_password": "wrong-password"}, "CERTIFICATE_PASSWORD_WRONG"),
        ({"certificate_password": None}, "CERTIFICATE_PASSWORD_WRONG"),
        ({"client_certificate": base64.b64encode(b"\x30\x82garbage").decode()}, None),
        ({"client_certificate": "%%% not base64 %%%"}, "CERTIFICATE_FILE_INVALID"),
    ],
)
def test_certificate_problems_give_a_clear_event(
    run_action, sim, client_cert, ca, account_change, code, private_tmpdir
):
    run = run_action(account=account_fields(sim, client_cert, ca, **account_change))
    expected = code or "CERTIFICATE_FILE_INVALID"
    assert_reported(run, expected)
    assert run.status == 2 and run.event["sent"] is False
    assert "wrong-password" not in run.log and "wrong-password" not in json.dumps(run.event)
    assert sim.connections == 0
    assert leftover_cert_dirs(private_tmpdir) == []


def test_missing_account_is_reported(run_action, sim):
    run = run_action({"account": "nope"})
    assert_reported(run, "ACCOUNT_INVALID")
    assert "nope" in run.event["detail"]
    assert sim.connections == 0


def test_read_timeout_is_not_retried(run_action, sim, private_tmpdir):
    sim.fail_next("hang")
    run = run_action(read_timeout=0.5)
    sim.release()
    assert_reported(run, "NO_ANSWER")
    assert run.event["attempts"] == 1 and run.event["sent"] is True
    assert run.sleeps == [] and len(sim.requests) == 1
    assert run.status == 4
    assert leftover_cert_dirs(private_tmpdir) == []


def test_connection_lost_after_the_request_is_not_retried(run_action, sim):
    sim.fail_next("reset_after_request")
    run = run_action()
    assert_reported(run, "NO_ANSWER")
    assert run.event["attempts"] == 1 and len(sim.requests) == 1


def test_refused_connection_is_retried(run_action, sim):
    sim.pause()  # nothing listens on the port: connection refused
    run = run_action(on_sleep=lambda n: sim.resume())
    assert_reported(run, "DONE")
    assert run.event["attempts"] == 2 and len(run.sleeps) == 1
    assert len(sim.mailbox) == 1


def test_refused_every_time_gives_up_after_three_attempts(run_action, sim):
    sim.pause()
    run = run_action()
    assert_reported(run, "CONNECTION_FAILED")
    assert run.event["attempts"] == 3 and len(run.sleeps) == 2
    assert run.sleeps[1] > run.sleeps[0]  # exponential backoff
    assert run.event["sent"] is False and run.status == 4


def test_reset_during_handshake_is_retried(run_action, sim):
    sim.fail_next("reset_on_connect")
    run = run_action()
    assert run.event["code"] == "DONE" and run.event["attempts"] == 2
    assert len(sim.mailbox) == 1


def test_a_refused_handshake_is_retried(run_action, sim):
    """RM's fatal handshake_failure alert: no request left, so no mail can have."""
    sim.fail_next("refuse_handshake", "refuse_handshake")
    run = run_action()
    assert run.event["code"] == "DONE" and run.event["attempts"] == 3
    assert len(run.sleeps) == 2 and len(sim.mailbox) == 1 and len(sim.requests) == 1


def test_a_handshake_refused_every_time_is_reported_after_three_attempts(run_action, sim):
    sim.fail_next("refuse_handshake", "refuse_handshake", "refuse_handshake")
    run = run_action()
    assert_reported(run, "TLS_HANDSHAKE_FAILED")
    assert "HANDSHAKE_FAILURE" in run.event["detail"].upper()
    assert run.event["attempts"] == 3 and run.event["sent"] is False
    assert sim.requests == [] and sim.mailbox == [] and sim.connections == 3


def test_503_before_the_body_is_read_is_retried(run_action, sim):
    sim.fail_next("status_503")
    run = run_action()
    assert run.event["code"] == "DONE" and run.event["attempts"] == 2
    assert len(sim.mailbox) == 1


def test_persistent_503_is_reported(run_action, sim):
    sim.fail_next("status_503", "status_503", "status_503")
    run = run_action()
    assert_reported(run, "SERVICE_UNAVAILABLE")
    assert run.event["attempts"] == 3 and run.event["http_status"] == 503
    assert sim.mailbox == []


def test_answer_without_code_is_reported(run_action, sim):
    sim.fail_next("not_json")
    run = run_action()
    assert_reported(run, "UNEXPECTED_ANSWER")
    assert run.event["http_status"] == 502 and "Bad gateway" in run.event["detail"]


def test_untrusted_server_certificate_is_not_retried(run_action, sim, client_cert, ca):
    other = TestCA.create("Someone else's CA")
    run = run_action(
        account=account_fields(sim, client_cert, ca, ca_bundle=other.cert_pem.decode())
    )
    assert_reported(run, "TLS_HANDSHAKE_FAILED")
    assert run.event["attempts"] == 1 and sim.requests == []


def test_client_certificate_of_another_ca_is_refused_by_rm(run_action, sim, ca):
    stranger = TestCA.create("Unknown client CA").issue_client("splunk-rm", email=SENDER)
    run = run_action(account=account_fields(sim, stranger, ca))
    assert_reported(run, "TLS_HANDSHAKE_FAILED")
    assert sim.requests == [] and sim.mailbox == []
