"""Result codes of the Release Manager REST mail interface (docs/rm_send_mail.md), and the
add-on's own codes for outcomes RM never gets to judge.

Every outcome event carries the code, its range, what it means and what the
administrator should do, so that a failed alert explains itself.
"""

from __future__ import annotations


class CodeInfo:
    """One code's range, meaning and measure (a plain class: see rm.action)."""

    __slots__ = ("action_to_take", "code", "explanation", "range")

    def __init__(self, code: str, range: str, explanation: str, action_to_take: str) -> None:
        self.code = code
        self.range = range
        self.explanation = explanation
        self.action_to_take = action_to_take

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CodeInfo):
            return NotImplemented
        return (self.code, self.range, self.explanation, self.action_to_take) == (
            other.code,
            other.range,
            other.explanation,
            other.action_to_take,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CodeInfo({self.code!r}, {self.range!r})"


DONE = "DONE"
UNKNOWN_RANGE = "unknown"

_RM_CODES = (
    CodeInfo(
        "DONE",
        "dispatch",
        "The e-mail was delivered and is in the recipient's inbox.",
        "Nothing.",
    ),
    CodeInfo(
        "MISSING_ANY_PERMISSION",
        "security",
        "The client certificate does not own the sender e-mail address.",
        "Create an e-mail address for the owner of the client certificate.",
    ),
    CodeInfo(
        "HAS_PERMISSION_BUT_MISSING_WHITELIST_ENTRY",
        "security",
        "The client certificate owns the e-mail address, but there is no REST whitelist entry.",
        "Create a REST whitelist entry for the e-mail address of the user who owns the "
        "PKCS#12 certificate.",
    ),
    CodeInfo(
        "HAS_PERMISSION_HAS_WHITELIST_BUT_NONE_MATCH_NAME",
        "security",
        "No REST whitelist entry has the whitelist name of the account.",
        "Correct the whitelist name (of the REST whitelist entry in RM, or of the account "
        "on the add-on's Configuration page).",
    ),
    CodeInfo(
        "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_BUT_IP_MISMATCH",
        "security",
        "The sender's IP address matches no REST whitelist entry.",
        "Correct the IP address of the REST whitelist entry: it must be the IP address "
        "of this Splunk server as RM sees it.",
    ),
    CodeInfo(
        "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_AMBIGUOUS",
        "security",
        "There are too many REST whitelist entries for the IP address.",
        "Remove the duplicate REST whitelist entries.",
    ),
    CodeInfo(
        "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_UNIQUE_BUT_SERVERHOSTNAME_MISMATCH",
        "security",
        "The server host name does not match the organisation in which the certificate "
        "owner is assigned to a user group.",
        "Check that the certificate owner is in a user group of the organisation that "
        "matches the host name of the account.",
    ),
    CodeInfo(
        "RECIPIENTS_ADDRESS_MISS_AT_SIGN",
        "validation",
        "A recipient e-mail address lacks the at sign (@).",
        "Correct the recipients (To) of the alert action.",
    ),
    CodeInfo(
        "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE",
        "validation",
        "A recipient e-mail address has a capital letter.",
        "Use lower-case e-mail addresses only.",
    ),
    CodeInfo(
        "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY",
        "validation",
        "The subject of the e-mail is empty.",
        "Set a subject in the alert action.",
    ),
    CodeInfo(
        "TEXT_OR_HTML_MUST_BE_SET",
        "validation",
        "Both the text and the HTML body of the e-mail are empty.",
        "Set a text or an HTML body in the alert action.",
    ),
    CodeInfo(
        "ERROR_CHECK_MAIL_SEND_TRIAL",
        "transport",
        "An error occurred while delivering the e-mail to the recipient.",
        "See the dispatch log of the e-mail in Release Manager.",
    ),
    CodeInfo(
        "REQUEST_CONTENT_TYPE_MUST_BE_JSON",
        "validation",
        "The REST request was not JSON.",
        "Never sent by this add-on: report it to the add-on's maintainers.",
    ),
)

# Outcomes decided before or around the call to RM; RM never answers these.
_ADDON_CODES = (
    CodeInfo(
        "RECIPIENTS_MISSING",
        "validation",
        "No recipient is left once empty entries of To are dropped.",
        "Set at least one recipient in To; check that tokens such as $result.owner$ "
        "expand to an address for this search.",
    ),
    CodeInfo(
        "INVALID_PARAMETER",
        "configuration",
        "A parameter of the alert action is not valid.",
        "Correct the parameter named in the detail field in the alert's actions.",
    ),
    CodeInfo(
        "ACCOUNT_INVALID",
        "configuration",
        "The Release Manager account of the alert action cannot be read, or a field of "
        "it is not valid.",
        "Select an existing account in the alert action, or add it on the add-on's "
        "Configuration page.",
    ),
    CodeInfo(
        "CERTIFICATE_PASSWORD_WRONG",
        "configuration",
        "The certificate password does not open the PKCS#12 file (or the file is damaged).",
        "Enter the password of the PKCS#12 file in the account, or upload the file again.",
    ),
    CodeInfo(
        "CERTIFICATE_FILE_INVALID",
        "configuration",
        "The client certificate of the account is not a readable PKCS#12 file, or it "
        "lacks the certificate or its private key.",
        "Upload the .p12/.pfx file holding the client certificate and its private key.",
    ),
    CodeInfo(
        "CERTIFICATE_EXPIRED",
        "configuration",
        "The client certificate is expired or not yet valid.",
        "Ask the Release Manager administrators for a new client certificate and upload it.",
    ),
    CodeInfo(
        "TLS_HANDSHAKE_FAILED",
        "transport",
        "The TLS handshake with Release Manager failed: its server certificate is not "
        "trusted, or it refused the client certificate. No mail was sent.",
        "Check the account's CA bundle and host name, and that RM accepts the client certificate.",
    ),
    CodeInfo(
        "CONNECTION_FAILED",
        "transport",
        "Release Manager could not be reached; no mail was sent.",
        "Check the host name, DNS, firewall and the Proxy settings of the add-on.",
    ),
    CodeInfo(
        "SERVICE_UNAVAILABLE",
        "transport",
        "Release Manager answered 503 (unavailable) to every attempt; no mail was sent.",
        "Retry later; ask the RM administrators if it persists.",
    ),
    CodeInfo(
        "INTERNAL_ERROR",
        "internal",
        "The alert action failed unexpectedly.",
        "See rm_send_mail_modalert.log (index=_internal) and report it to the add-on's "
        "maintainers.",
    ),
    CodeInfo(
        "NO_ANSWER",
        "transport",
        "The request was sent but no answer came (read timeout or connection lost): the "
        "mail may or may not have been sent. It was not repeated, to avoid a duplicate.",
        "Look the mail up in the RM dispatch log before sending it again.",
    ),
    CodeInfo(
        "UNEXPECTED_ANSWER",
        "transport",
        "Release Manager answered without a result code.",
        "See the HTTP status and detail fields; check the host name points at Release Manager.",
    ),
)

CODES: dict[str, CodeInfo] = {info.code: info for info in _RM_CODES + _ADDON_CODES}
RM_CODES = tuple(info.code for info in _RM_CODES)
ADDON_CODES = tuple(info.code for info in _ADDON_CODES)


def describe(code: str) -> CodeInfo:
    """The table entry of `code`; an unknown code is reported as it came."""
    known = CODES.get(code)
    if known is not None:
        return known
    return CodeInfo(
        code,
        UNKNOWN_RANGE,
        "Release Manager answered a code this add-on does not know.",
        "Look the code up in the Release Manager documentation or ask its administrators.",
    )
