"""Google's OAuth token endpoint for service accounts, as the simulators serve it.

The JWT bearer grant (RFC 7523, developers.google.com/identity/protocols/oauth2/
service-account "Preparing to make an authorized API call"): an RS256-signed JWT
with `iss` = the service account, `sub` = the impersonated admin (domain-wide
delegation), `scope` = space-separated scopes, `aud` = the token URL, `iat`/`exp`
at most one hour apart. Errors are JSON `{"error", "error_description"}`:
`invalid_grant` for a bad JWT, `unauthorized_client` for a scope the domain did not
grant the client.
"""

from __future__ import annotations

import base64
import json
from typing import Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_assertion(
    assertion: str,
    *,
    public_key,
    issuer: str,
    audience: str,
    subject: str,
    granted_scopes: frozenset,
    now: float,
) -> tuple:
    """(problem or None, the scopes asked for). A problem reads "error: description"."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        public_key.verify(
            b64url_decode(signature_b64),
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except Exception:
        return "invalid_grant: bad JWT signature", frozenset()
    scopes = frozenset(str(claims.get("scope", "")).split())
    problem: Optional[str] = None
    if header.get("alg") != "RS256":
        problem = "invalid_grant: alg must be RS256"
    elif claims.get("iss") != issuer:
        problem = "invalid_grant: unknown issuer"
    elif claims.get("aud") != audience:
        problem = "invalid_grant: wrong audience"
    elif not scopes or not scopes <= granted_scopes:
        problem = "unauthorized_client: scope not granted in domain-wide delegation"
    elif claims.get("sub") != subject:
        problem = "unauthorized_client: subject is not the delegated admin"
    elif not (claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0)):
        problem = "invalid_grant: JWT expired or not yet valid"
    return problem, scopes
