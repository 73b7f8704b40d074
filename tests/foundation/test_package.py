"""The built add-on: schemes, validation through the real protocol, generated confs."""

from __future__ import annotations

import configparser
import json
import re

import pytest

from harness import modinput

# The parameters of each part, as its page in docs/ names them.
DOCUMENTED_PARAMETERS = {
    "ser_report": {
        "account", "interval", "index", "start_date", "window", "settle_minutes",
        "revisit_days", "max_requests_per_minute",
    },
    "ser_usage": {
        "account", "interval", "index", "start_date", "reports", "settle_hours",
        "revisit_days", "max_requests_per_minute",
    },
    "sense_listener": {
        "port", "bind_address", "path", "tls", "tls_cert_file", "tls_key_file", "api_key_name",
        "api_key_value", "allow_unauthenticated", "allowed_sources", "max_body_bytes", "index",
    },
    "audit_export": {
        "account", "users", "search_query", "include_deleted", "package_content", "export_every",
        "first_begin_date", "interval", "delete_after_download", "daily_request_budget",
        "include_body", "body_max_bytes", "index",
    },
}  # fmt: skip
# inputs.conf settings that splunkd itself reads for every input: UCC (rightly) keeps
# them out of the script's scheme, and the input form declares them.
SPLUNKD_SETTINGS = {"interval", "index"}


def conf(path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


@pytest.mark.parametrize("input_type", sorted(DOCUMENTED_PARAMETERS))
def test_scheme_lists_exactly_the_spec_parameters(installed_app, input_type):
    scheme = modinput.scheme(installed_app / "bin" / f"{input_type}.py")
    assert set(scheme.arg_names) - {"name"} == DOCUMENTED_PARAMETERS[input_type] - SPLUNKD_SETTINGS
    assert scheme.use_external_validation
    assert not scheme.use_single_instance


@pytest.mark.parametrize("input_type", sorted(DOCUMENTED_PARAMETERS))
def test_input_form_declares_exactly_the_spec_parameters(built_app, input_type):
    config = json.loads((built_app / "appserver/static/js/build/globalConfig.json").read_text())
    service = next(s for s in config["pages"]["inputs"]["services"] if s["name"] == input_type)
    fields = {entity["field"] for entity in service["entity"]} - {"name"}
    # a long-running listener may carry splunkd's `interval` (restart on exit)
    extra = {"interval"} if input_type == "sense_listener" else set()
    assert fields - extra == DOCUMENTED_PARAMETERS[input_type]


@pytest.mark.parametrize(
    ("input_type", "params", "field"),
    [
        ("ser_report", {"account": "a", "start_date": "2024-13-45"}, "start_date"),
        ("ser_report", {"account": "a", "window": "2h"}, "window"),
        ("ser_report", {"account": "a", "max_requests_per_minute": "1001"}, "max_requests_per_minute"),
        ("ser_report", {"account": "a", "revisit_days": "30"}, "revisit_days"),
        ("sense_listener", {"port": "0", "tls": "0", "allow_unauthenticated": "1"}, "port"),
        ("sense_listener", {"port": "8443", "tls": "0", "allow_unauthenticated": "1", "allowed_sources": "10.1.1.0/40"}, "allowed_sources"),
        ("sense_listener", {"port": "8443", "tls": "1", "allow_unauthenticated": "1"}, "tls_cert_file"),
        ("sense_listener", {"port": "8443", "tls": "0"}, "api_key_value"),
        ("audit_export", {"account": "g", "users": "alice", "daily_request_budget": "500"}, "daily_request_budget"),
        ("audit_export", {"account": "g", "users": "alice", "first_begin_date": "yesterday"}, "first_begin_date"),
        ("audit_export", {"account": "g", "users": "alice", "package_content": "EVERYTHING"}, "package_content"),
        ("ser_report", {"account": "a", "settle_minutes": "-5"}, "settle_minutes"),
        ("sense_listener", {"port": "8443", "tls": "0", "allow_unauthenticated": "1", "bind_address": "my-host"}, "bind_address"),
        ("sense_listener", {"port": "8443", "tls": "0", "allow_unauthenticated": "1", "path": "sense"}, "path"),
        ("sense_listener", {"port": "8443", "tls": "0", "allow_unauthenticated": "1", "api_key_name": "X Key"}, "api_key_name"),
        ("sense_listener", {"port": "8443", "tls": "0", "allow_unauthenticated": "1", "max_body_bytes": "10"}, "max_body_bytes"),
        ("sense_listener", {"port": "8443", "tls": "1", "allow_unauthenticated": "1", "tls_cert_file": __file__}, "tls_key_file"),
        ("audit_export", {"account": "g", "users": "alice", "export_every": "10m"}, "export_every"),
        ("audit_export", {"account": "g", "users": "alice", "body_max_bytes": "0"}, "body_max_bytes"),
        ("audit_export", {"account": "g", "users": "not a user"}, "users"),
        ("audit_export", {"account": "g", "users": "alice", "include_body": "perhaps"}, "include_body"),
    ],
)  # fmt: skip
def test_validation_refuses_bad_values_naming_the_field(
    installed_app, splunkd, input_type, params, field
):
    result = modinput.validate(
        installed_app / "bin" / f"{input_type}.py",
        f"{input_type}://probe",
        params,
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
    )
    assert not result.ok
    assert result.message and result.message.startswith(f"{field}:"), result.message


@pytest.mark.parametrize(
    ("input_type", "params"),
    [
        ("ser_report", {"account": "a", "start_date": "2024-05-01T08:00:00Z", "window": "15m"}),
        ("sense_listener", {"port": "8443", "tls": "0", "api_key_value": "******", "allowed_sources": "10.0.0.0/8"}),
        ("audit_export", {"account": "g", "users": "alice,bob", "export_every": "12h"}),
    ],
)  # fmt: skip
def test_validation_accepts_good_values(installed_app, splunkd, input_type, params):
    result = modinput.validate(
        installed_app / "bin" / f"{input_type}.py",
        f"{input_type}://probe",
        params,
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
    )
    assert result.ok, result.message


def test_every_script_declares_python3_and_python_required(built_app):
    default = built_app / "default"
    for name, parser in (
        ("inputs.conf", conf(default / "inputs.conf")),
        ("alert_actions.conf", conf(default / "alert_actions.conf")),
        ("restmap.conf", conf(default / "restmap.conf")),
    ):
        stanzas = [
            s
            for s in parser.sections()
            if name != "restmap.conf" or s.startswith("admin_external:")
        ]
        assert stanzas, name
        for stanza in stanzas:
            assert parser.get(stanza, "python.version") == "python3", (name, stanza)
            assert "3.13" in parser.get(stanza, "python.required"), (name, stanza)


def test_app_identity_and_label(built_app):
    app = conf(built_app / "default" / "app.conf")
    assert app.get("package", "id") == "TA_mailsec"
    assert app.get("ui", "label") == "MailSec Add-on for Splunk"
    manifest = json.loads((built_app / "app.manifest").read_text())
    assert manifest["info"]["id"]["name"] == "TA_mailsec"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["info"]["id"]["version"])


def test_secret_fields_are_encrypted_in_the_ui_definition(built_app):
    config = json.loads(
        (built_app / "appserver" / "static" / "js" / "build" / "globalConfig.json").read_text()
    )
    secret_fields = {
        "client_secret", "service_account_json", "pgp_private_key", "pgp_passphrase",
        "client_certificate", "certificate_password", "api_key_value", "proxy_password",
    }  # fmt: skip
    seen = {}
    for tab in config["pages"]["configuration"]["tabs"]:
        for entity in tab.get("entity", []):
            seen[entity["field"]] = entity.get("encrypted", False)
    for service in config["pages"]["inputs"]["services"]:
        for entity in service["entity"]:
            seen[entity["field"]] = entity.get("encrypted", False)
    assert {field: seen.get(field) for field in secret_fields} == dict.fromkeys(secret_fields, True)


def test_listener_is_hidden_on_splunk_cloud(built_app):
    config = json.loads(
        (built_app / "appserver" / "static" / "js" / "build" / "globalConfig.json").read_text()
    )
    services = {s["name"]: s for s in config["pages"]["inputs"]["services"]}
    assert services["sense_listener"].get("hideForPlatform") == "cloud"
    assert "hideForPlatform" not in services["ser_report"]


def test_no_library_removed_in_python_313_is_imported(built_app):
    removed = {
        "uu",
        "cgi",
        "cgitb",
        "imghdr",
        "telnetlib",
        "pipes",
        "crypt",
        "nntplib",
        "asynchat",
        "asyncore",
        "smtpd",
    }
    pattern = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_][\w]*)", re.MULTILINE)
    for path in (built_app / "bin").rglob("*.py"):
        used = set(pattern.findall(path.read_text()))
        assert not used & removed, (path, used & removed)
