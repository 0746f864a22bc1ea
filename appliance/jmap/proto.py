"""JMAP on the wire (RFC 8620 core, RFC 8621 mail): capability names, limits, requests, errors.

Only shapes live here; the behaviour that reads and writes them is in the
method modules and ``router``. Method arguments are msgspec Structs in
camelCase (``rename="camel"``): an argument of the wrong type is an
``invalidArguments`` error naming it, and arguments the server does not know
are ignored, as RFC 8620 lets a server do.
"""

from __future__ import annotations

__all__ = [
    "CORE",
    "ERROR_PREFIX",
    "GATE_PROPERTY",
    "MAIL",
    "SUBMISSION",
    "TOKEN_PROPERTY",
    "VENDOR",
    "ChangesArgs",
    "Comparator",
    "CoreLimits",
    "EmailGetArgs",
    "EmailImport",
    "EmailImportArgs",
    "EmailQueryArgs",
    "EmailQueryChangesArgs",
    "EmailSubmissionSetArgs",
    "GetArgs",
    "MailboxQueryArgs",
    "MailboxQueryChangesArgs",
    "MailboxSetArgs",
    "MethodError",
    "QueryArgs",
    "QueryChangesArgs",
    "Request",
    "RequestError",
    "ResultReference",
    "SearchSnippetGetArgs",
    "SetArgs",
    "SetError",
    "is_id",
]

import re
from typing import Annotated, Any

import msgspec

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
VENDOR = "urn:appliance:jmap"
"""The appliance's own capability: the gate's view of a message (``GATE_PROPERTY``), capability tokens."""
GATE_PROPERTY = "urn:appliance:jmap:gate"
"""Email/get property: what the gate decided about the message (decision id, capabilities, auth results, rule)."""
TOKEN_PROPERTY = "urn:appliance:jmap:capabilityToken"
"""EmailSubmission/set create property: the capability token that allows the send."""
ERROR_PREFIX = "urn:ietf:params:jmap:error:"
"""Request-level error types (RFC 8620 3.6.1) are this prefix plus a name."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")

UnsignedInt = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Int = Annotated[int, msgspec.Meta(ge=-(2**53) + 1, le=2**53 - 1)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]


def is_id(value: object) -> bool:
    """An RFC 8620 1.2 Id: 1 to 255 characters of the URL-safe base64 alphabet."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class CoreLimits(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The ``urn:ietf:params:jmap:core`` capability: the limits every request is held to."""

    max_size_upload: int
    max_concurrent_upload: int = 4
    max_size_request: int = 10_000_000
    max_concurrent_requests: int = 8
    max_calls_in_request: int = 32
    max_objects_in_get: int = 500
    max_objects_in_set: int = 500
    collation_algorithms: list[str] = msgspec.field(
        default_factory=lambda: ["i;ascii-casemap", "i;ascii-numeric", "i;unicode-casemap"])


class Request(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """RFC 8620 3.3: the body of a POST to the API URL."""

    using: list[str]
    method_calls: list[tuple[str, dict[str, Any], str]]
    created_ids: dict[str, str] | None = None


class ResultReference(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """RFC 8620 3.7: an argument taken from an earlier response of the same request."""

    result_of: str
    name: str
    path: str


class RequestError(Exception):
    """A request-level error (RFC 8620 3.6.1): answered as ``application/problem+json`` (RFC 7807)."""

    def __init__(self, name: str, detail: str, *, status: int = 400, limit: str | None = None) -> None:
        super().__init__(detail)
        self.type = ERROR_PREFIX + name
        self.status = status
        self.detail = detail
        self.limit = limit

    def body(self) -> dict[str, Any]:
        problem: dict[str, Any] = {"type": self.type, "status": self.status, "detail": self.detail}
        if self.limit is not None:
            problem["limit"] = self.limit
        return problem


class MethodError(Exception):
    """A method-level error (RFC 8620 3.6.2): the call's response is ``["error", {...}, callId]``."""

    def __init__(self, type_: str, description: str | None = None, **extra: Any) -> None:
        super().__init__(description or type_)
        self.type = type_
        self.description = description
        self.extra = extra

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"type": self.type, **self.extra}
        if self.description:
            args["description"] = self.description
        return args


def SetError(type_: str, description: str | None = None, **extra: Any) -> dict[str, Any]:
    """A SetError object (RFC 8620 5.3): why one create, update or destroy failed."""
    error: dict[str, Any] = {"type": type_, **extra}
    if description:
        error["description"] = description
    return error


class _Args(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Every method's arguments: the account they act on."""

    account_id: str


class GetArgs(_Args, frozen=True):
    ids: list[str] | None = None
    properties: list[str] | None = None


class EmailGetArgs(GetArgs, frozen=True):
    body_properties: list[str] | None = None
    fetch_text_body_values: bool = False
    fetch_html_body_values: bool = msgspec.field(default=False, name="fetchHTMLBodyValues")
    fetch_all_body_values: bool = False
    max_body_value_bytes: UnsignedInt = 0


class ChangesArgs(_Args, frozen=True):
    since_state: str
    max_changes: PositiveInt | None = None


class SetArgs(_Args, frozen=True):
    if_in_state: str | None = None
    create: dict[str, dict[str, Any]] | None = None
    update: dict[str, dict[str, Any]] | None = None
    destroy: list[str] | None = None


class MailboxSetArgs(SetArgs, frozen=True):
    on_destroy_remove_emails: bool = False


class EmailSubmissionSetArgs(SetArgs, frozen=True):
    on_success_update_email: dict[str, dict[str, Any]] | None = None
    on_success_destroy_email: list[str] | None = None


class Comparator(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    property: str
    is_ascending: bool = True
    collation: str | None = None
    keyword: str | None = None


class QueryArgs(_Args, frozen=True):
    filter: dict[str, Any] | None = None
    sort: list[Comparator] | None = None
    position: Int = 0
    anchor: str | None = None
    anchor_offset: Int = 0
    limit: UnsignedInt | None = None
    calculate_total: bool = False


class EmailQueryArgs(QueryArgs, frozen=True):
    collapse_threads: bool = False


class MailboxQueryArgs(QueryArgs, frozen=True):
    sort_as_tree: bool = False
    filter_as_tree: bool = False


class QueryChangesArgs(_Args, frozen=True):
    since_query_state: str
    filter: dict[str, Any] | None = None
    sort: list[Comparator] | None = None
    max_changes: PositiveInt | None = None
    up_to_id: str | None = None
    calculate_total: bool = False


class EmailQueryChangesArgs(QueryChangesArgs, frozen=True):
    collapse_threads: bool = False


class MailboxQueryChangesArgs(QueryChangesArgs, frozen=True):
    sort_as_tree: bool = False
    filter_as_tree: bool = False


class EmailImport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    blob_id: str
    mailbox_ids: dict[str, bool]
    keywords: dict[str, bool] = msgspec.field(default_factory=dict)
    received_at: str | None = None


class EmailImportArgs(_Args, frozen=True):
    emails: dict[str, EmailImport]
    if_in_state: str | None = None


class SearchSnippetGetArgs(_Args, frozen=True):
    email_ids: list[str]
    filter: dict[str, Any] | None = None
