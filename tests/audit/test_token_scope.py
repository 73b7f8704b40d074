"""The bearer token goes only over https, only to the configured API host and port."""

from __future__ import annotations

import pytest

from mailsec.audit.api import AuditApi


class Tokens:
    def token(self) -> str:
        return "ya29.secret"


API = "https://apps-apis.example.test:8443"


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        (f"{API}/a/data/compliance/audit/file0", True),
        ("https://APPS-APIS.example.test:8443/a/data/x", True),  # host names are case-blind
        ("http://apps-apis.example.test:8443/a/data/x", False),  # same host, in clear
        ("https://apps-apis.example.test/a/data/x", False),  # another port
        ("https://storage.example.test:8443/a/data/x", False),  # another host
        ("https://apps-apis.example.test:8443@evil.test/x", False),  # userinfo trick
        ("https://apps-apis.example.test:notaport/x", False),
        ("", False),
    ],
)
def test_the_token_is_sent_only_over_https_to_the_api_host(url, sent):
    api = AuditApi(http=None, api_url=API, domain="example.com", tokens=Tokens())
    headers = api.auth_headers(url)
    assert ("Authorization" in headers) is sent
    if sent:
        assert headers["Authorization"] == "Bearer ya29.secret"


def test_the_api_calls_themselves_carry_the_token():
    api = AuditApi(http=None, api_url=API, domain="example.com", tokens=Tokens())
    assert api.auth_headers() == {"Authorization": "Bearer ya29.secret"}
