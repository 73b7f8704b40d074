"""The Google Vault API (matters, mail exports) and Cloud Storage media URLs: JSON
over HTTPS (developers.google.com/workspace/vault/reference/rest).

Answers are read leniently: a field missing or of another type reads as absent,
never as a crash; an answer that is not a JSON object is an ApiError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional
from urllib.parse import quote

from mailsec.core.google_auth import TokenProvider
from mailsec.core.http import NO_REPEAT_AFTER_SEND, HttpClient, RetryPolicy

SCOPES = (
    "https://www.googleapis.com/auth/ediscovery",
    "https://www.googleapis.com/auth/devstorage.read_only",
)
PAGE_SIZE = 100
MAX_PAGES = 1000  # a list that keeps giving a nextPageToken beyond this is cut off
# creation is never repeated once it may have reached Google, and a 429 is not
# waited out within the run: the window is requested on a later run
CREATE_POLICY = RetryPolicy(
    max_attempts=NO_REPEAT_AFTER_SEND.max_attempts,
    retry_statuses=NO_REPEAT_AFTER_SEND.retry_statuses,
    retry_after_send_errors=False,
    retry_429=False,
)


class ApiError(Exception):
    def __init__(self, message: str, status: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class QuotaExceeded(ApiError):
    """429 RESOURCE_EXHAUSTED: a per-minute quota or the 20-exports-in-progress ceiling."""


class NotFound(ApiError):
    """404: the matter or export does not exist (any more: Google deletes exports
    15 days after creation)."""


@dataclass(frozen=True)
class ExportFile:
    bucket: str
    name: str
    size: Optional[int]
    md5_hex: str


@dataclass(frozen=True)
class Export:
    id: str
    name: str
    status: str
    create_time: Optional[str]
    raw: dict

    @property
    def files(self) -> list:
        sink = self.raw.get("cloudStorageSink")
        items = sink.get("files") if isinstance(sink, dict) else None
        out = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            out.append(
                ExportFile(
                    bucket=str(item.get("bucketName") or ""),
                    name=str(item.get("objectName") or ""),
                    size=_int(item.get("size")),
                    md5_hex=str(item.get("md5Hash") or "").strip().lower(),
                )
            )
        return out

    @property
    def stats(self) -> dict:
        stats = self.raw.get("stats")
        if not isinstance(stats, dict):
            return {}
        return {key: _int(value) for key, value in stats.items()}

    @classmethod
    def from_json(cls, data: Any) -> Export:
        if not isinstance(data, dict) or not data.get("id"):
            raise ApiError("the answer is not an Export (no id)")
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            status=str(data.get("status") or "UNKNOWN").upper(),
            create_time=str(data["createTime"]) if data.get("createTime") else None,
            raw=data,
        )


def _int(value: Any) -> Optional[int]:
    """int64 fields travel as JSON strings; a number or a string of digits reads."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class VaultApi:
    def __init__(
        self, http: HttpClient, vault_url: str, storage_url: str, tokens: TokenProvider
    ) -> None:
        self._http = http
        self._base = vault_url.rstrip("/") + "/v1"
        self._storage = storage_url.rstrip("/")
        self._tokens = tokens

    def auth_headers(self, http: Optional[HttpClient] = None) -> dict:
        """`http`: the calling thread's session, should the token need renewing."""
        return {"Authorization": f"Bearer {self._tokens.token(http)}"}

    def token_refused(self, headers: dict) -> None:
        """A 401 to a request made with `headers`: that token is not used again."""
        value = headers.get("Authorization", "")
        self._tokens.invalidate(value[len("Bearer ") :] or None)

    def _call(self, method: str, url: str, policy: Optional[RetryPolicy] = None, **kwargs) -> Any:
        headers = self.auth_headers()
        response = self._http.request(method, url, headers=headers, policy=policy, **kwargs)
        if response.status_code == 401:  # a token revoked early: once more with a new one
            self.token_refused(headers)
            response = self._http.request(
                method, url, headers=self.auth_headers(), policy=policy, **kwargs
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            error = error if isinstance(error, dict) else {}
            reason = str(error.get("status") or "")
            message = str(error.get("message") or "")[:300]
            text = f"HTTP {response.status_code} {reason} {message}".strip()
            if response.status_code == 429:
                raise QuotaExceeded(text, 429, reason)
            if response.status_code == 404:
                raise NotFound(text, 404, reason)
            raise ApiError(text, response.status_code, reason)
        if not isinstance(body, dict):
            raise ApiError(
                f"HTTP {response.status_code}: the answer is not a JSON object",
                response.status_code,
            )
        return body

    # -- matters ----------------------------------------------------------------
    def create_matter(self, name: str, description: str) -> str:
        body = self._call(
            "POST",
            f"{self._base}/matters",
            policy=NO_REPEAT_AFTER_SEND,
            json={"name": name, "description": description},
        )
        matter_id = body.get("matterId")
        if not matter_id:
            raise ApiError("the matter creation answer has no matterId")
        return str(matter_id)

    def matter_state(self, matter_id: str) -> str:
        body = self._call("GET", f"{self._base}/matters/{quote(matter_id, safe='')}")
        return str(body.get("state") or "UNKNOWN").upper()

    def list_matters(self) -> Iterator[dict]:
        yield from self._pages(f"{self._base}/matters", "matters", {"state": "OPEN"})

    # -- exports ----------------------------------------------------------------
    def _exports_url(self, matter_id: str) -> str:
        return f"{self._base}/matters/{quote(matter_id, safe='')}/exports"

    def create_export(self, matter_id: str, body: dict) -> Export:
        return Export.from_json(
            self._call("POST", self._exports_url(matter_id), policy=CREATE_POLICY, json=body)
        )

    def get_export(self, matter_id: str, export_id: str) -> Export:
        url = f"{self._exports_url(matter_id)}/{quote(export_id, safe='')}"
        return Export.from_json(self._call("GET", url))

    def list_exports(self, matter_id: str) -> Iterator[Export]:
        for item in self._pages(self._exports_url(matter_id), "exports", {}):
            try:
                yield Export.from_json(item)
            except ApiError:
                continue  # an entry without an id cannot be one of ours

    def delete_export(self, matter_id: str, export_id: str) -> None:
        url = f"{self._exports_url(matter_id)}/{quote(export_id, safe='')}"
        self._call("DELETE", url)

    def _pages(self, url: str, key: str, params: dict) -> Iterator[dict]:
        token = None
        for _ in range(MAX_PAGES):
            query = dict(params, pageSize=PAGE_SIZE)
            if token:
                query["pageToken"] = token
            body = self._call("GET", url, params=query)
            items = body.get(key)
            yield from items if isinstance(items, list) else []
            token = body.get("nextPageToken")
            if not token:
                return

    # -- Cloud Storage ----------------------------------------------------------
    def media_url(self, bucket: str, name: str) -> str:
        return (
            f"{self._storage}/storage/v1/b/{quote(bucket, safe='')}"
            f"/o/{quote(name, safe='')}?alt=media"
        )
