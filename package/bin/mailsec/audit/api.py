"""The Google Email Audit API (mailbox exports): Atom XML over HTTPS.

Entries carry their data as `<apps:property name=... value=.../>`. Google's own
feed samples put `<entry>` and `<id>` in no namespace inside a feed that declares
only prefixed namespaces, next to `<atom:id>` in the Atom namespace, so elements
are matched by local name. Every document goes through defusedxml with DTDs
forbidden: a billion-laughs or external-entity answer is refused with HostileXml.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Optional
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from mailsec.audit.auth import TokenProvider
from mailsec.core.http import NO_REPEAT_AFTER_SEND, HttpClient, RetryPolicy
from mailsec.core.timeutil import format_google, parse_google

ATOM = "http://www.w3.org/2005/Atom"
APPS = "http://schemas.google.com/apps/2006"
CONTENT_TYPE = "application/atom+xml"
STATUSES = ("PENDING", "ERROR", "COMPLETED", "MARKED_DELETE", "DELETED", "EXPIRED")
MAX_PAGES = 1000  # a list feed that keeps pointing to "next" beyond this is refused


class ApiError(Exception):
    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class HostileXml(ApiError):
    """The answer held a DTD or entity declaration: refused, never expanded."""


class QuotaExceeded(ApiError):
    """Google refused an export request: the domain's 100 a day are used."""


@dataclass(frozen=True)
class ExportRequest:
    request_id: str
    status: str
    properties: dict

    @property
    def user(self) -> str:
        return self.properties.get("userEmailAddress", "")

    @property
    def number_of_files(self) -> int:
        try:
            return int(self.properties.get("numberOfFiles", "0"))
        except ValueError:
            return 0

    @property
    def file_urls(self) -> list:
        return [self.properties.get(f"fileUrl{i}", "") for i in range(self.number_of_files)]

    def date(self, name: str) -> Optional[datetime]:
        value = self.properties.get(name)
        if not value:
            return None
        try:
            return parse_google(value)
        except ValueError:
            return None


def _origin(url: str) -> tuple:
    """(scheme, host, port) of a URL, the port made explicit; None parts when unreadable."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"https": 443, "http": 80}.get(scheme)
        return (scheme, (parts.hostname or "").lower(), port)
    except ValueError:  # a port that is not a number
        return (None, None, None)


def parse_xml(text: bytes) -> Element:
    try:
        return SafeET.fromstring(text, forbid_dtd=True)
    except DefusedXmlException as error:
        raise HostileXml(
            f"refused an XML answer holding a DTD or entity declaration ({type(error).__name__}): "
            "an Atom answer never has one"
        ) from None
    except SafeET.ParseError as error:
        raise ApiError(f"the answer is not well-formed XML: {error}") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def entry_properties(entry: Element) -> dict:
    return {
        element.get("name", ""): element.get("value", "")
        for element in entry.iter(f"{{{APPS}}}property")
    }


def to_request(entry: Element) -> ExportRequest:
    properties = entry_properties(entry)
    status = properties.get("status", "")
    return ExportRequest(properties.get("requestId", ""), status, properties)


def property_entry(properties: dict) -> bytes:
    lines = [f"<atom:entry xmlns:atom='{ATOM}' xmlns:apps='{APPS}'>"]
    for name, value in properties.items():
        lines.append(f"<apps:property name={quoteattr(name)} value={quoteattr(value)}/>")
    lines.append("</atom:entry>")
    return "\n".join(lines).encode("utf-8")


class AuditApi:
    def __init__(
        self,
        http: HttpClient,
        api_url: str,
        domain: str,
        tokens: TokenProvider,
    ) -> None:
        self.http = http
        self.base = api_url.rstrip("/")
        self.domain = domain
        self.tokens = tokens
        self._origin = _origin(self.base)

    # -- plumbing ---------------------------------------------------------
    def auth_headers(self, url: Optional[str] = None) -> dict:
        """The bearer token, only over https to the API's own host and port: a file
        URL elsewhere, or in http:// (the token would cross the network in clear),
        does not get it."""
        if url is not None and (self._origin[0] != "https" or _origin(url) != self._origin):
            return {}
        return {"Authorization": f"Bearer {self.tokens.token()}"}

    def _call(
        self,
        method: str,
        url: str,
        body: Optional[bytes] = None,
        policy: Optional[RetryPolicy] = None,
    ):
        for attempt in (1, 2):
            headers = self.auth_headers()
            if body is not None:
                headers["Content-Type"] = CONTENT_TYPE
            response = self.http.request(method, url, data=body, headers=headers, policy=policy)
            if response.status_code == 401 and attempt == 1:
                self.tokens.invalidate()  # expired or revoked: one fresh token
                response.close()
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _document(
        self,
        method: str,
        url: str,
        body: Optional[bytes] = None,
        ok=(200, 201),
        policy: Optional[RetryPolicy] = None,
    ):
        response = self._call(method, url, body, policy)
        content = response.content
        if response.status_code not in ok:
            reason = _error_reason(content)
            message = f"{method} {urlsplit(url).path} answered HTTP {response.status_code}"
            if reason:
                message += f": {reason}"
            if response.status_code in (403, 429) and _mentions_quota(reason):
                raise QuotaExceeded(message, response.status_code)
            raise ApiError(message, response.status_code)
        return parse_xml(content)

    def _export_url(self, *parts: str) -> str:
        path = "/".join(quote(part, safe="@.") for part in (self.domain, *parts))
        return f"{self.base}/a/feeds/compliance/audit/mail/export/{path}"

    # -- operations -------------------------------------------------------
    def upload_public_key(self, armored_key: str) -> None:
        encoded = base64.b64encode(armored_key.encode("us-ascii")).decode("ascii")
        url = f"{self.base}/a/feeds/compliance/audit/publickey/{quote(self.domain, safe='.')}"
        self._document("POST", url, property_entry({"publicKey": encoded}), ok=(200, 201))

    def create_export(
        self,
        user: str,
        begin: datetime,
        end: datetime,
        include_deleted: bool,
        search_query: Optional[str],
        package_content: str,
    ) -> ExportRequest:
        properties = {
            "beginDate": format_google(begin),
            "endDate": format_google(end),
            "includeDeleted": "true" if include_deleted else "false",
        }
        if search_query:
            properties["searchQuery"] = search_query
        properties["packageContent"] = package_content
        # never sent twice: an answer lost after Google created the export would make a
        # second, orphaned export off the budget; the caller settles the doubt instead
        root = self._document(
            "POST",
            self._export_url(user),
            property_entry(properties),
            ok=(201,),
            policy=NO_REPEAT_AFTER_SEND,
        )
        request = to_request(root)
        if not request.request_id:
            raise ApiError("the export was created but the answer carries no requestId")
        return request

    def status(self, user: str, request_id: str) -> ExportRequest:
        return to_request(self._document("GET", self._export_url(user, request_id)))

    def list_exports(self, from_date: Optional[datetime] = None) -> Iterator[ExportRequest]:
        url = self._export_url()
        if from_date is not None:
            url += "?fromDate=" + quote(format_google(from_date))
        for _page in range(MAX_PAGES):
            root = self._document("GET", url)
            for child in root:
                if _local(child.tag) == "entry":
                    yield to_request(child)
            url = _next_link(root)
            if not url:
                return
            if _origin(url) != self._origin:
                # the token goes with it: only over https to the API's own host and port
                raise ApiError("the list feed's next link points elsewhere than api_url: refused")
        raise ApiError(f"the list feed has more than {MAX_PAGES} pages: refused")

    def delete(self, user: str, request_id: str) -> str:
        """DELETE the export; return the status Google reports (DELETED when the
        answer has no entry, or MARKED_DELETE when files may still exist)."""
        response = self._call("DELETE", self._export_url(user, request_id))
        if response.status_code not in (200, 201, 204):
            raise ApiError(
                f"DELETE answered HTTP {response.status_code}: {_error_reason(response.content)}",
                response.status_code,
            )
        if not response.content.strip():
            return "DELETED"
        return to_request(parse_xml(response.content)).status or "DELETED"


def _next_link(root: Element) -> Optional[str]:
    for child in root:
        if _local(child.tag) == "link" and child.get("rel") == "next":
            return child.get("href")
    return None


def _error_reason(content: bytes) -> str:
    """The reason of a GData error document, or the start of a plain-text answer."""
    if not content:
        return ""
    if content.lstrip().startswith(b"<"):
        try:
            root = parse_xml(content)
        except ApiError:
            return ""
        for element in root.iter():
            if _local(element.tag) == "error" and element.get("reason"):
                return element.get("reason", "")[:300]
        return (root.text or "").strip()[:300]
    return content[:300].decode("utf-8", "replace").strip()


def _mentions_quota(reason: str) -> bool:
    lowered = reason.lower()
    return any(word in lowered for word in ("limit", "quota", "exceeded"))
