"""Shape checks of management objects, strict as Stalwart's deserializer: a check returns what was
expected (a sentence) or None when the value fits."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]

STAGES = ("connect", "ehlo", "mail", "rcpt", "data")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_AT_DOMAIN = re.compile(r"^[^@\s]+@[^@\s]+$")


def is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"a string, got {value!r}"


def is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"a boolean, got {value!r}"


def is_number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else f"a number (milliseconds), got {value!r}"


def is_uint(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else f"a non-negative integer, got {value!r}"


def is_domain_name(value: Any) -> str | None:
    if not isinstance(value, str) or not _DOMAIN.match(value):
        return f"a lowercase domain name like example.org, got {value!r}"
    return None


def is_account_name(value: Any) -> str | None:
    if not isinstance(value, str) or not _LOCAL_AT_DOMAIN.match(value) or value != value.lower():
        return f"a lowercase local@domain name, got {value!r}"
    return None


def is_url(value: Any) -> str | None:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        return f"an http(s) URL, got {value!r}"
    return None


def is_expression(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("else"), str) and set(value) <= {"match", "else"}:
        return None
    return f'an expression {{"else": "true"}} (optionally with "match"), got {value!r}'


def is_stage_set(value: Any) -> str | None:
    if isinstance(value, dict) and value and all(k in STAGES and v is True for k, v in value.items()):
        return None
    return f"a set map {{stage: true}} with stages among {list(STAGES)}, got {value!r}"


def is_string_map(value: Any) -> str | None:
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return f"a map of strings to strings, got {value!r}"


def secret_key_problem(value: Any) -> str | None:
    """A SecretKey: Value {secret}, EnvironmentVariable {variableName} or File {filePath}."""
    shapes = {"Value": "secret", "EnvironmentVariable": "variableName", "File": "filePath"}
    if not isinstance(value, dict) or value.get("@type") not in shapes:
        return f"a SecretKey with @type among {list(shapes)}, got {value!r}"
    field = shapes[value["@type"]]
    if set(value) != {"@type", field} or not isinstance(value[field], str):
        return f"a SecretKey {value['@type']} with exactly {{@type, {field} (string)}}, got {value!r}"
    return None


def text_problem(value: Any, text_field: str) -> str | None:
    """A PublicText/SecretText (0.16): Text {value|secret}, EnvironmentVariable {variableName}, File {filePath}."""
    shapes = {"Text": text_field, "EnvironmentVariable": "variableName", "File": "filePath"}
    if not isinstance(value, dict) or value.get("@type") not in shapes:
        return f"a text with @type among {list(shapes)}, got {value!r}"
    field = shapes[value["@type"]]
    if set(value) != {"@type", field} or not isinstance(value[field], str):
        return f"a text {value['@type']} with exactly {{@type, {field} (string)}}, got {value!r}"
    return None


def is_public_text(value: Any) -> str | None:
    return text_problem(value, "value")


def is_secret_text(value: Any) -> str | None:
    return text_problem(value, "secret")


def is_http_auth(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("@type") == "Bearer":
        if set(value) != {"@type", "bearerToken"}:
            return f'{{"@type":"Bearer","bearerToken":<SecretKey>}}, got keys {sorted(value)}'
        problem = secret_key_problem(value["bearerToken"])
        return f"bearerToken: {problem}" if problem else None
    if isinstance(value, dict) and value.get("@type") == "Basic":
        if set(value) != {"@type", "username", "secret"} or not isinstance(value["username"], str):
            return f'{{"@type":"Basic","username":<string>,"secret":<SecretKey>}}, got {value!r}'
        problem = secret_key_problem(value["secret"])
        return f"secret: {problem}" if problem else None
    return f'{{"@type":"Bearer","bearerToken":...}} or {{"@type":"Basic","username","secret"}}, got {value!r}'


def is_credentials(value: Any) -> str | None:
    if isinstance(value, list):
        return f'an index-keyed map {{"0": {{...}}}}, not a list: {value!r}'
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.isdigit() for k in value):
        return f'an index-keyed map {{"0": {{"@type":"Password","secret":...}}}}, got {value!r}'
    for key, credential in value.items():
        if not (isinstance(credential, dict) and credential.get("@type") == "Password"
                and isinstance(credential.get("secret"), str) and set(credential) <= {"@type", "secret"}):
            return f'credentials.{key}: {{"@type":"Password","secret":<string>}}, got {credential!r}'
    return None


def is_user_roles(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("@type") in ("User", "Admin", "Custom"):
        return None
    return f'{{"@type":"User"}}, got {value!r}'


def is_user_type(value: Any) -> str | None:
    return None if value == "User" else f'"User", got {value!r}'


DOMAIN: dict[str, Check] = {"name": is_domain_name, "description": is_str}
ACCOUNT: dict[str, Check] = {
    "@type": is_user_type, "name": is_account_name, "domainId": is_str, "credentials": is_credentials,
    "roles": is_user_roles, "description": is_str,
}
API_KEY: dict[str, Check] = {"description": is_str}
MTA_HOOK: dict[str, Check] = {
    "url": is_url, "enable": is_expression, "stages": is_stage_set, "timeout": is_number,
    "tempFailOnError": is_bool, "allowInvalidCerts": is_bool, "maxResponseSize": is_uint,
    "httpHeaders": is_string_map, "httpAuth": is_http_auth, "description": is_str,
}
CERTIFICATE: dict[str, Check] = {"certificate": is_public_text, "privateKey": is_secret_text}
REQUIRED: dict[str, tuple[str, ...]] = {
    "Domain": ("name",), "Account": ("name", "domainId"), "ApiKey": (), "MtaHook": ("url",),
    "Certificate": ("certificate", "privateKey"),
}
