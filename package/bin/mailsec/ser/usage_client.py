"""Proofpoint SER's current reporting API, as `ser_usage` calls it (docs/ser_usage.md).

Paths and bodies as Proofpoint's community client `ser-admin-api-python` (v0.3.0)
sends them: the overview is a GET without parameters (`/v2/usage/overview`, or
`/v1/usage/overview` on a tenant that answers v2 with 404); the reports are POSTs
whose JSON body holds `dates` {`gte`, `lte`} (`YYYY-MM-DD`, both ends inclusive),
`pageNum` (from 1), `pageSize`, `orderBy` and `orderDir`. The token and the 401 retry
are `SerTokenClient`'s, shared with `ser_report`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mailsec.ser.auth import SerApiError, SerTokenClient, vendor_message

OVERVIEW_V2_PATH = "/v2/usage/overview"
OVERVIEW_V1_PATH = "/v1/usage/overview"
RELAY_USAGE_PATH = "/v1/usage/relay-users"
RELAY_FAILURES_PATH = "/v1/failures/relay-users"
DELIVERY_DOMAIN_PATH = "/v1/failures/relay-users/{}/delivery-failures/domain"
PAGE_SIZE = 100
JSON = "application/json"


def delivery_domain_path(relay_user_id: str) -> str:
    return DELIVERY_DOMAIN_PATH.format(quote(relay_user_id, safe=""))


class UsageClient(SerTokenClient):
    def overview(self, version: str) -> Any:
        """The overview; SerApiError (status 404 included) when the tenant refuses it."""
        path = OVERVIEW_V2_PATH if version == "v2" else OVERVIEW_V1_PATH
        response = self.authorized("GET", self.account.reporting_url + path, accept=JSON)
        return self._json(response, f"overview {version}")

    def report_page(self, path: str, day: str, page: int, order_by: str) -> Any:
        """One page of a report for one UTC day."""
        body = {
            "dates": {"gte": day, "lte": day},
            "pageNum": page,
            "pageSize": PAGE_SIZE,
            "orderBy": order_by,
            "orderDir": "asc",
        }
        url = self.account.reporting_url + path
        response = self.authorized("POST", url, accept=JSON, json=body)
        return self._json(response, f"{path} {day} page {page}")

    @staticmethod
    def _json(response, what: str) -> Any:
        if response.status_code != 200:
            raise SerApiError(what, response.status_code, vendor_message(response))
        try:
            return response.json()
        except ValueError:
            raise SerApiError(what, None, "the answer is not JSON") from None
