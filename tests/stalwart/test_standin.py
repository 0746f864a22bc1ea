"""The Stalwart stand-in itself: bootstrap, control endpoints, management, mail JMAP, push, SMTP, hooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images import free_port
from tests.stalwart.standin_process import StandinProcess

ADMIN = ("admin", "secret")
MGMT_USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]


def make_standin(tmp_path: Path, configured: bool, **kwargs: Any) -> StandinProcess:
    """A stand-in over ``tmp_path`` (config.json written first when ``configured``)."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir(exist_ok=True)
    if configured:
        (config_dir / "config.json").write_text(json.dumps({"@type": "RocksDb", "path": "/var/lib/stalwart/"}))
    return StandinProcess(tmp_path / "data", config_dir, free_port(), free_port(), **kwargs)


@pytest.fixture
def bootstrapping(tmp_path: Path) -> Iterator[StandinProcess]:
    """A stand-in without config.json (bootstrap mode)."""
    with make_standin(tmp_path, configured=False) as process:
        yield process


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    """A configured stand-in."""
    with make_standin(tmp_path, configured=True) as process:
        yield process


def call(process: StandinProcess, *calls: list[Any], using: list[str] | None = None,
         auth: Any = ADMIN) -> list[list[Any]]:
    """POST one JMAP request; its methodResponses."""
    response = httpx.post(f"{process.base_url}/jmap/", auth=auth,
                          json={"using": using or MGMT_USING, "methodCalls": list(calls)})
    assert response.status_code == 200, response.text
    return list(response.json()["methodResponses"])


def control(process: StandinProcess, name: str) -> Any:
    """GET a /_standin/ dump."""
    return httpx.get(f"{process.base_url}/_standin/{name}").json()


# -- bootstrap and health


def test_bootstrap_mode_is_live_but_not_ready(bootstrapping: StandinProcess) -> None:
    assert httpx.get(f"{bootstrapping.base_url}/healthz/live").status_code == 200
    assert httpx.get(f"{bootstrapping.base_url}/healthz/ready").status_code == 503


def test_bootstrap_mode_answers_only_bootstrap_methods(bootstrapping: StandinProcess) -> None:
    responses = call(bootstrapping, ["x:Domain/get", {"ids": None}, "0"], ["x:Bootstrap/get", {}, "1"])
    assert responses[0] == ["error", {"type": "forbidden",
                                      "description": responses[0][1]["description"]}, "0"]
    assert responses[1][0] == "x:Bootstrap/get"
    assert responses[1][1]["list"][0]["id"] == "singleton"


def test_management_without_admin_credentials_is_401(bootstrapping: StandinProcess) -> None:
    body = {"using": MGMT_USING, "methodCalls": [["x:Bootstrap/get", {}, "0"]]}
    assert httpx.post(f"{bootstrapping.base_url}/jmap/", json=body).status_code == 401
    assert httpx.post(f"{bootstrapping.base_url}/jmap", json=body, auth=("admin", "wrong")).status_code == 401


def test_management_without_stalwart_capability_is_unknown_capability(bootstrapping: StandinProcess) -> None:
    response = httpx.post(f"{bootstrapping.base_url}/jmap/", auth=ADMIN, json={
        "using": ["urn:ietf:params:jmap:core"], "methodCalls": [["x:Bootstrap/get", {}, "0"]]})
    assert response.status_code == 400
    assert response.json()["type"] == "urn:ietf:params:jmap:error:unknownCapability"
    assert any("urn:stalwart:jmap" in v for v in control(bootstrapping, "violations"))


def test_bootstrap_set_writes_config_and_restart_makes_it_ready(tmp_path: Path) -> None:
    process = make_standin(tmp_path, configured=False)
    with process:
        responses = call(process, ["x:Bootstrap/set", {"update": {"singleton": {
            "defaultDomain": "example.org", "serverHostname": "mail.example.org",
            "requestTlsCertificate": False, "generateDkimKeys": True}}}, "0"])
        assert responses[0][1]["updated"] == {"singleton": None}
        assert json.loads(process.config_path.read_text()) == {"@type": "RocksDb", "path": "/var/lib/stalwart/"}
        # Effective only after a restart.
        assert httpx.get(f"{process.base_url}/healthz/ready").status_code == 503
    with process:
        assert httpx.get(f"{process.base_url}/healthz/ready").status_code == 200
        settings = call(process, ["x:Bootstrap/get", {}, "0"])[0][1]["list"][0]
        assert settings["serverHostname"] == "mail.example.org"


def test_bootstrap_set_with_a_wrong_type_is_not_updated_and_recorded(bootstrapping: StandinProcess) -> None:
    responses = call(bootstrapping, ["x:Bootstrap/set", {"update": {"singleton": {
        "defaultDomain": "example.org", "generateDkimKeys": "yes"}}}, "0"])
    assert responses[0][1]["notUpdated"]["singleton"] == {"type": "invalidProperties",
                                                          "properties": ["generateDkimKeys"]}
    assert not bootstrapping.config_path.exists()
    assert any("generateDkimKeys" in v for v in control(bootstrapping, "violations"))


# -- control endpoints


def test_unhealthy_makes_ready_503_while_live_stays_200(standin: StandinProcess) -> None:
    assert httpx.get(f"{standin.base_url}/healthz/ready").status_code == 200
    httpx.post(f"{standin.base_url}/_standin/unhealthy")
    assert httpx.get(f"{standin.base_url}/healthz/ready").status_code == 503
    assert httpx.get(f"{standin.base_url}/healthz/live").status_code == 200
    httpx.post(f"{standin.base_url}/_standin/healthy")
    assert httpx.get(f"{standin.base_url}/healthz/ready").status_code == 200


def test_crash_exits_with_status_1(standin: StandinProcess) -> None:
    assert httpx.post(f"{standin.base_url}/_standin/crash").status_code == 200
    assert standin.process is not None
    assert standin.process.wait(10) == 1
    assert "standin.crash" in standin.log_text()


def test_hang_blocks_every_request_including_health(standin: StandinProcess) -> None:
    assert httpx.post(f"{standin.base_url}/_standin/hang").status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{standin.base_url}/healthz/live", timeout=0.5)
    assert standin.process is not None and standin.process.poll() is None


def test_logs_are_one_json_object_per_line(standin: StandinProcess) -> None:
    httpx.get(f"{standin.base_url}/healthz/live")
    lines = [json.loads(line) for line in standin.log_text().splitlines() if line.strip()]
    assert lines[0]["event"] == "server.start"
    assert all({"timestamp", "level", "event", "message"} <= set(line) for line in lines)
    assert any(line["event"] == "http.request" for line in lines)


# -- the image


@pytest.mark.container
def test_image_serves_bootstrap_mode_then_configured_mode_after_a_restart() -> None:
    import smtplib
    import time

    import docker

    from tests.images import docker_available, standin_image

    if not docker_available():
        pytest.skip("no Docker Engine answers here")
    image = standin_image()
    assert image.startswith("appliance-stalwart-standin:")
    port, smtp_port = free_port(), free_port()
    client = docker.from_env()
    container = client.containers.run(
        image, detach=True, network_mode="host",
        environment={"STALWART_RECOVERY_ADMIN": "admin:secret", "STANDIN_HTTP": f"127.0.0.1:{port}",
                     "STANDIN_SMTP": f"127.0.0.1:{smtp_port}"})
    try:
        deadline = time.monotonic() + 30
        live = None
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/healthz/live", timeout=1).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert live == 200, container.logs().decode()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz/ready").status_code == 503  # bootstrap mode
        set_call = ["x:Bootstrap/set", {"update": {"singleton": {"defaultDomain": "example.org"}}}, "0"]
        answer = httpx.post(f"http://127.0.0.1:{port}/jmap/", auth=ADMIN,
                            json={"using": MGMT_USING, "methodCalls": [set_call]})
        assert answer.json()["methodResponses"][0][1]["updated"] == {"singleton": None}  # volume writable by 2000
        first_log = json.loads(container.logs().decode().splitlines()[0])
        assert first_log["event"] == "server.start"
        container.restart(timeout=5)  # config.json now in the /etc/stalwart volume: configured mode
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/healthz/ready", timeout=1).status_code
                if ready == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert ready == 200, container.logs().decode()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        container.remove(force=True, v=True)
        client.close()


# -- management


def create(process: StandinProcess, kind: str, obj: dict[str, Any], **args: Any) -> dict[str, Any]:
    """x:<kind>/set create one object; the set response."""
    return call(process, [f"x:{kind}/set", {"create": {"new": obj}, **args}, "0"])[0][1]


def provision(process: StandinProcess, name: str = "agent@example.org", password: str = "pw") -> tuple[str, str]:
    """A domain example.org (if missing) and a user; (domain id, account id)."""
    domains = call(process, ["x:Domain/query", {"filter": {"name": "example.org"}}, "0"])[0][1]["ids"]
    domain_id = domains[0] if domains else create(process, "Domain", {"name": "example.org"})["created"]["new"]["id"]
    account = create(process, "Account", {
        "@type": "User", "name": name, "domainId": domain_id,
        "credentials": {"0": {"@type": "Password", "secret": password}}, "roles": {"@type": "User"}})
    return domain_id, account["created"]["new"]["id"]


def wait_for_dkim(process: StandinProcess, domain_id: str) -> list[dict[str, Any]]:
    """The domain's DKIM keys once both exist (they are made a moment after the domain)."""
    import time

    for _ in range(200):
        ids = call(process, ["x:DkimSignature/query", {"filter": {"domainId": domain_id}}, "0"])[0][1]["ids"]
        if len(ids) == 2:
            return list(call(process, ["x:DkimSignature/get", {"ids": ids}, "0"])[0][1]["list"])
        time.sleep(0.05)
    raise AssertionError("no DKIM keys after 10 s")


def test_domain_gets_rsa_and_ed25519_dkim_keys_and_a_zone_file(standin: StandinProcess) -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import load_der_public_key

    domain_id = create(standin, "Domain", {"name": "example.org"})["created"]["new"]["id"]
    keys = {key["@type"]: key for key in wait_for_dkim(standin, domain_id)}
    assert set(keys) == {"Dkim1RsaSha256", "Dkim1Ed25519Sha256"}
    assert load_der_public_key(base64.b64decode(keys["Dkim1RsaSha256"]["publicKey"])).key_size == 2048  # type: ignore[union-attr]
    assert len(base64.b64decode(keys["Dkim1Ed25519Sha256"]["publicKey"])) == 32
    assert keys["Dkim1RsaSha256"]["selector"].endswith("r") and "privateKey" not in keys["Dkim1RsaSha256"]
    zone = call(standin, ["x:Domain/get", {"ids": [domain_id]}, "0"])[0][1]["list"][0]["dnsZoneFile"]
    assert "example.org. 3600 IN MX 10" in zone and "v=spf1" in zone and "_dmarc.example.org." in zone
    assert f"{keys['Dkim1Ed25519Sha256']['selector']}._domainkey.example.org." in zone


def test_duplicate_domain_is_already_exists(standin: StandinProcess) -> None:
    create(standin, "Domain", {"name": "example.org"})
    assert create(standin, "Domain", {"name": "example.org"})["notCreated"]["new"]["type"] == "alreadyExists"


def test_account_credentials_as_a_list_is_a_recorded_violation(standin: StandinProcess) -> None:
    domain_id, _ = provision(standin)
    answer = create(standin, "Account", {
        "@type": "User", "name": "b@example.org", "domainId": domain_id,
        "credentials": [{"@type": "Password", "secret": "x"}], "roles": {"@type": "User"}})
    assert answer["notCreated"]["new"] == {"type": "invalidProperties", "properties": ["credentials"],
                                           "description": answer["notCreated"]["new"]["description"]}
    assert any("credentials" in v and "index-keyed" in v for v in control(standin, "violations"))


def test_account_name_outside_its_domain_is_refused(standin: StandinProcess) -> None:
    domain_id, _ = provision(standin)
    answer = create(standin, "Account", {"@type": "User", "name": "b@other.org", "domainId": domain_id,
                                         "credentials": {"0": {"@type": "Password", "secret": "x"}}})
    assert answer["notCreated"]["new"]["properties"] == ["name"]


def test_api_key_secret_shows_only_in_the_create_response_and_authenticates(standin: StandinProcess) -> None:
    _, account_id = provision(standin)
    created = create(standin, "ApiKey", {"description": "appliance"}, accountId=account_id)["created"]["new"]
    assert created["secret"].startswith("API_")
    listed = call(standin, ["x:ApiKey/get", {"ids": None, "accountId": account_id}, "0"])[0][1]["list"]
    assert listed == [{"id": created["id"], "description": "appliance", "accountId": account_id}]
    session = httpx.get(f"{standin.base_url}/jmap/session", headers={"Authorization": f"Bearer {created['secret']}"})
    assert session.json()["primaryAccounts"]["urn:ietf:params:jmap:mail"] == account_id


HOOK = {
    "url": "http://127.0.0.1:9/hook", "enable": {"else": "true"}, "stages": {"rcpt": True, "data": True},
    "timeout": 5000, "tempFailOnError": True, "allowInvalidCerts": False, "maxResponseSize": 1048576,
    "httpHeaders": {"X-Test": "1"},
    "httpAuth": {"@type": "Bearer", "bearerToken": {"@type": "Value", "secret": "hook-secret"}},
}


def test_mta_hook_in_the_documented_shape_is_created_updated_and_destroyed(standin: StandinProcess) -> None:
    hook_id = create(standin, "MtaHook", HOOK)["created"]["new"]["id"]
    answer = call(standin, ["x:MtaHook/set", {"update": {hook_id: {"timeout": 2000}}}, "0"])[0][1]
    assert answer["updated"] == {hook_id: None}
    assert call(standin, ["x:MtaHook/get", {"ids": [hook_id]}, "0"])[0][1]["list"][0]["timeout"] == 2000
    assert call(standin, ["x:MtaHook/set", {"destroy": [hook_id]}, "0"])[0][1]["destroyed"] == [hook_id]
    assert control(standin, "violations") == []


@pytest.mark.parametrize(("field", "value"), [
    ("timeout", "5s"),
    ("stages", ["rcpt", "data"]),
    ("stages", {"queue": True}),
    ("httpAuth", {"@type": "Bearer", "bearerToken": "hook-secret"}),
    ("httpAuth", {"@type": "Bearer", "bearerToken": {"@type": "Plain", "secret": "x"}}),
    ("retries", 3),
])
def test_mta_hook_in_a_wrong_shape_is_refused_and_recorded(standin: StandinProcess, field: str, value: Any) -> None:
    answer = create(standin, "MtaHook", {**HOOK, field: value})
    assert answer["notCreated"]["new"]["properties"] == [field]
    assert any(field in v for v in control(standin, "violations"))


def test_reload_settings_action_is_created(standin: StandinProcess) -> None:
    answer = create(standin, "Action", {"@type": "ReloadSettings"})
    assert list(answer["created"]) == ["new"]


def test_management_state_survives_a_restart(tmp_path: Path) -> None:
    process = make_standin(tmp_path, configured=True)
    with process:
        domain_id, account_id = provision(process)
    with process:
        accounts = call(process, ["x:Account/get", {"ids": None}, "0"])[0][1]["list"]
        assert [a["id"] for a in accounts] == [account_id]
        assert accounts[0]["domainId"] == domain_id
        session = httpx.get(f"{process.base_url}/jmap/session", auth=("agent@example.org", "pw"))
        assert session.status_code == 200


# -- mail JMAP and push

MAIL_USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
SUBMIT_USING = [*MAIL_USING, "urn:ietf:params:jmap:submission"]
AGENT = ("agent@example.org", "pw")
RAW = (b"From: Alice <alice@example.net>\r\nTo: agent@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\n"
       b"X-Long: first\r\n second\r\nMessage-ID: <m1@example.net>\r\n\r\nHello.\r\n")


def mail(process: StandinProcess, *calls: list[Any], using: list[str] = MAIL_USING, auth: Any = AGENT) -> list[Any]:
    """A mail JMAP request as the agent."""
    return call(process, *calls, using=using, auth=auth)


def import_message(process: StandinProcess, account_id: str, raw: bytes = RAW, role: str = "inbox") -> str:
    """Upload and Email/import ``raw`` into the mailbox with ``role``; the Email id."""
    blob = httpx.post(f"{process.base_url}/jmap/upload/{account_id}/", content=raw, auth=AGENT,
                      headers={"Content-Type": "message/rfc822"}).json()
    assert blob["size"] == len(raw)
    boxes = mail(process, ["Mailbox/get", {"ids": None}, "0"])[0][1]["list"]
    box = next(b["id"] for b in boxes if b["role"] == role)
    created = mail(process, ["Email/import", {"accountId": account_id, "emails": {
        "m": {"blobId": blob["blobId"], "mailboxIds": {box: True}, "keywords": {}}}}, "0"])[0][1]["created"]
    return str(created["m"]["id"])


def test_well_known_jmap_redirects_to_a_session_under_the_public_url(tmp_path: Path) -> None:
    with make_standin(tmp_path, configured=True, public_url="https://mail.example.org") as process:
        _, account_id = provision(process)
        redirect = httpx.get(f"{process.base_url}/.well-known/jmap", auth=AGENT)
        assert redirect.status_code == 307 and redirect.headers["location"] == "/jmap/session"
        session = httpx.get(f"{process.base_url}/.well-known/jmap", auth=AGENT, follow_redirects=True).json()
        assert session["apiUrl"] == "https://mail.example.org/jmap/"
        assert session["uploadUrl"] == "https://mail.example.org/jmap/upload/{accountId}/"
        assert session["eventSourceUrl"] == (
            "https://mail.example.org/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}")
        assert session["primaryAccounts"]["urn:ietf:params:jmap:mail"] == account_id


def test_account_has_inbox_drafts_and_sent(standin: StandinProcess) -> None:
    provision(standin)
    boxes = mail(standin, ["Mailbox/get", {"ids": None}, "0"])[0][1]["list"]
    assert sorted(b["role"] for b in boxes) == ["drafts", "inbox", "sent"]


def test_imported_email_reads_back_with_header_forms_and_downloads(standin: StandinProcess) -> None:
    _, account_id = provision(standin)
    email_id = import_message(standin, account_id)
    got = mail(standin, ["Email/get", {"ids": [email_id], "properties": [
        "id", "blobId", "size", "from", "to", "subject", "messageId", "headers", "header:X-Long:asText",
        "header:Subject:asText:all", "receivedAt"]}, "0"])[0][1]["list"][0]
    assert got["from"] == [{"name": "Alice", "email": "alice@example.net"}]
    assert got["subject"] == "Café" and got["header:Subject:asText:all"] == ["Café"]
    assert got["header:X-Long:asText"] == "first second"
    assert got["messageId"] == ["m1@example.net"] and got["size"] == len(RAW)
    assert {"name": "X-Long", "value": " first\r\n second"} in got["headers"]
    download = httpx.get(f"{standin.base_url}/jmap/download/{account_id}/{got['blobId']}/m.eml?accept=message/rfc822",
                         auth=AGENT)
    assert download.content == RAW


def test_email_query_filters_by_mailbox_and_sorts_by_received_at(standin: StandinProcess) -> None:
    _, account_id = provision(standin)
    first = import_message(standin, account_id)
    second = import_message(standin, account_id, RAW.replace(b"Hello", b"Again"))
    import_message(standin, account_id, RAW.replace(b"Hello", b"Sent"), role="sent")
    inbox = next(b["id"] for b in mail(standin, ["Mailbox/get", {"ids": None}, "0"])[0][1]["list"]
                 if b["role"] == "inbox")
    query = mail(standin, ["Email/query", {"filter": {"inMailbox": inbox},
                                           "sort": [{"property": "receivedAt", "isAscending": False}]}, "0"])
    assert query[0][1]["ids"] == [second, first] and query[0][1]["total"] == 2
    limited = mail(standin, ["Email/query", {"filter": {"inMailbox": inbox}, "position": 1, "limit": 1}, "0"])
    assert limited[0][1]["ids"] == [second]


def test_email_changes_report_created_updated_destroyed(standin: StandinProcess) -> None:
    _, account_id = provision(standin)
    since = mail(standin, ["Email/get", {"ids": []}, "0"])[0][1]["state"]
    first = import_message(standin, account_id)
    second = import_message(standin, account_id, RAW.replace(b"Hello", b"Again"))
    changes = mail(standin, ["Email/changes", {"sinceState": since}, "0"])[0][1]
    assert changes["created"] == [first, second] and not changes["hasMoreChanges"]
    paged = mail(standin, ["Email/changes", {"sinceState": since, "maxChanges": 1}, "0"])[0][1]
    assert paged["created"] == [first] and paged["hasMoreChanges"]
    middle = changes["newState"]
    mail(standin, ["Email/set", {"update": {first: {"keywords/$seen": True}}, "destroy": [second]}, "0"])
    later = mail(standin, ["Email/changes", {"sinceState": middle}, "0"])[0][1]
    assert later["updated"] == [first] and later["destroyed"] == [second]


def test_forget_changes_makes_earlier_states_incalculable(standin: StandinProcess) -> None:
    _, account_id = provision(standin)
    since = mail(standin, ["Email/get", {"ids": []}, "0"])[0][1]["state"]
    import_message(standin, account_id)
    httpx.post(f"{standin.base_url}/_standin/forget-changes")
    answer = mail(standin, ["Email/changes", {"sinceState": since}, "0"])[0]
    assert answer[0] == "error" and answer[1]["type"] == "cannotCalculateChanges"


def test_mail_methods_without_the_mail_capability_are_unknown(standin: StandinProcess) -> None:
    provision(standin)
    answer = mail(standin, ["Mailbox/get", {"ids": None}, "0"], using=["urn:ietf:params:jmap:core"])[0]
    assert answer[0] == "error" and answer[1]["type"] == "unknownMethod"
    assert any("Mailbox/get" in v for v in control(standin, "violations"))


def read_events(response: httpx.Response, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first ``count`` server-sent events of a stream."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
            if len(events) == count:
                break
    return events


def test_eventsource_pushes_a_state_change_for_a_new_email(standin: StandinProcess) -> None:
    import threading

    _, account_id = provision(standin)
    url = f"{standin.base_url}/jmap/eventsource/?types=Email,Mailbox&closeafter=state&ping=0"
    with httpx.stream("GET", url, auth=AGENT, timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream"
        threading.Thread(target=import_message, args=(standin, account_id)).start()
        [(kind, change)] = read_events(response, 1)
    assert kind == "state" and change["@type"] == "StateChange"
    state = mail(standin, ["Email/get", {"ids": []}, "0"])[0][1]["state"]
    assert set(change["changed"][account_id]) == {"Email", "Mailbox"}
    assert int(change["changed"][account_id]["Email"]) <= int(state)


def test_eventsource_pings_at_the_asked_interval(standin: StandinProcess) -> None:
    provision(standin)
    url = f"{standin.base_url}/jmap/eventsource/?types=*&closeafter=no&ping=1"
    with httpx.stream("GET", url, auth=AGENT, timeout=10) as response:
        assert read_events(response, 1) == [("ping", {"interval": 1})]


def test_mail_survives_a_restart(tmp_path: Path) -> None:
    process = make_standin(tmp_path, configured=True)
    with process:
        _, account_id = provision(process)
        email_id = import_message(process, account_id)
        state = mail(process, ["Email/get", {"ids": []}, "0"])[0][1]["state"]
    with process:
        got = mail(process, ["Email/get", {"ids": [email_id], "properties": ["subject"]}, "0"])[0][1]
        assert got["list"] == [{"id": email_id, "subject": "Café"}] and got["state"] == state


# -- SMTP, MTA hooks, submission


class HookReceiver:
    """A real HTTP hook endpoint on loopback: records each request, answers with ``answer(body)``."""

    def __init__(self, answer: Any) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append((dict(self.headers), body))
                status, reply = answer(body)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[HookReceiver]]:
    """Hook receivers made by a test, closed after it."""
    made: list[HookReceiver] = []
    yield made
    for receiver in made:
        receiver.close()


def add_hook(process: StandinProcess, receivers: list[HookReceiver], answer: Any, **fields: Any) -> HookReceiver:
    """A hook receiver registered as an x:MtaHook at rcpt and data (fields override the shape)."""
    receiver = HookReceiver(answer)
    receivers.append(receiver)
    created = create(process, "MtaHook", {**HOOK, "url": receiver.url, **fields})
    assert created["created"], created
    return receiver


def accept_with_header(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if body["context"]["stage"] == "data":
        return 200, {"action": "accept", "modifications": [
            {"type": "addHeader", "name": "X-Appliance-Decision", "value": "d-1"}]}
    return 200, {"action": "accept"}


MESSAGE = (b"From: Alice <alice@example.net>\r\nTo: agent@example.org\r\nSubject: Lunch\r\n"
           b"X-Folded: one\r\n\ttwo\r\n\r\n.leading dot\r\nSee you.\r\n")


def send(process: StandinProcess, sender: str, rcpts: list[str], raw: bytes = MESSAGE) -> dict[str, Any]:
    """Send over SMTP; smtplib's refused-recipient map."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", process.smtp_port, local_hostname="mail.example.net", timeout=10) as smtp:
        return dict(smtp.sendmail(sender, rcpts, raw))


def inbox_raw(process: StandinProcess, account_id: str, auth: Any = AGENT) -> list[bytes]:
    """Raw bytes of every Email in the account."""
    got = mail(process, ["Email/get", {"ids": None, "properties": ["blobId"]}, "0"], auth=auth)[0][1]["list"]
    return [httpx.get(f"{process.base_url}/jmap/download/{account_id}/{e['blobId']}/m", auth=auth).content
            for e in got]


def test_smtp_message_passes_the_hook_in_stalwarts_format_and_gets_its_header(
        standin: StandinProcess, receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    receiver = add_hook(standin, receivers, accept_with_header)
    assert send(standin, "Alice@Example.net", ["agent@example.org"]) == {}
    stages = [body["context"]["stage"] for _, body in receiver.requests]
    assert stages == ["rcpt", "data"]
    headers, data = receiver.requests[1]
    assert headers["Authorization"] == "Bearer hook-secret" and headers["X-Test"] == "1"
    assert data["envelope"] == {"from": {"address": "alice@example.net"}, "to": [{"address": "agent@example.org"}]}
    context = data["context"]
    assert context["client"] == {"ip": "127.0.0.1", "port": context["client"]["port"], "ptr": None,
                                 "helo": "mail.example.net", "activeConnections": 1}
    assert context["server"]["name"] == "Stalwart v0.16.18" and context["protocol"] == {"version": 1}
    assert int(context["queue"]["id"], 16) >= 0 and "queue" not in receiver.requests[0][1]["context"]
    assert ["X-Folded", " one\r\n\ttwo\r\n"] in data["message"]["headers"]
    assert data["message"]["contents"] == "leading dot\r\nSee you.\r\n".replace("leading", ".leading")
    rebuilt = "".join(f"{n}:{v}" for n, v in data["message"]["headers"]) + "\r\n" + data["message"]["contents"]
    assert rebuilt.encode() == MESSAGE and data["message"]["size"] == len(MESSAGE)
    [stored] = inbox_raw(standin, account_id)
    assert b"X-Appliance-Decision: d-1\r\n" in stored and stored.endswith(MESSAGE.split(b"\r\n", 1)[1])
    assert [call["response"]["action"] for call in control(standin, "hook-calls")] == ["accept", "accept"]


def test_hook_reject_with_a_response_is_the_smtp_reply(standin: StandinProcess,
                                                       receivers: list[HookReceiver]) -> None:
    import smtplib

    provision(standin)
    add_hook(standin, receivers, lambda body: (200, {"action": "reject", "response": {
        "status": 550, "enhanced_status": "5.7.1", "message": "Sender not allowed", "disconnect": False}}))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(standin, "alice@example.net", ["agent@example.org"])
    assert refused.value.recipients["agent@example.org"] == (550, b"5.7.1 Sender not allowed")


def test_hook_reject_without_a_response_is_503_5_5_3(standin: StandinProcess,
                                                     receivers: list[HookReceiver]) -> None:
    import smtplib

    provision(standin)
    add_hook(standin, receivers, lambda body: (200, {"action": "reject"}), stages={"data": True})
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(standin, "alice@example.net", ["agent@example.org"])
    assert refused.value.smtp_code == 503 and refused.value.smtp_error.startswith(b"5.5.3")


@pytest.mark.parametrize("answer", [(500, {"action": "accept"}), (200, b"not json"), (200, {"action": "maybe"}),
                                    (200, {"action": "accept", "modifications": [
                                        {"type": "changeFrom", "value": "x@example.net", "parameters": {"n": 1}}]})])
def test_hook_errors_tempfail_with_451_4_3_5(standin: StandinProcess, receivers: list[HookReceiver],
                                             answer: Any) -> None:
    import smtplib

    provision(standin)
    add_hook(standin, receivers, lambda body: answer, stages={"data": True})
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(standin, "alice@example.net", ["agent@example.org"])
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b"4.3.5")


def test_hook_error_without_temp_fail_is_skipped(standin: StandinProcess, receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    add_hook(standin, receivers, lambda body: (500, {}), stages={"data": True}, tempFailOnError=False)
    assert send(standin, "alice@example.net", ["agent@example.org"]) == {}
    assert len(inbox_raw(standin, account_id)) == 1


def test_discard_drops_and_quarantine_marks(standin: StandinProcess, receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    actions = iter(["discard", "quarantine"])
    add_hook(standin, receivers, lambda body: (200, {"action": next(actions)}), stages={"data": True})
    assert send(standin, "alice@example.net", ["agent@example.org"]) == {}
    assert inbox_raw(standin, account_id) == []
    send(standin, "alice@example.net", ["agent@example.org"])
    [stored] = inbox_raw(standin, account_id)
    assert b"\r\nX-Quarantine: true\r\n" in stored


def test_unknown_local_mailbox_is_refused_after_the_rcpt_hook(standin: StandinProcess,
                                                              receivers: list[HookReceiver]) -> None:
    import smtplib

    provision(standin)
    receiver = add_hook(standin, receivers, lambda body: (200, {"action": "accept"}))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(standin, "alice@example.net", ["nobody@example.org"])
    assert refused.value.recipients["nobody@example.org"][0] == 550
    assert receiver.requests[0][1]["envelope"]["to"] == [{"address": "nobody@example.org"}]


def test_modifications_rewrite_headers_envelope_and_body(standin: StandinProcess,
                                                         receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    provision(standin, "other@example.org", "pw2")
    add_hook(standin, receivers, lambda body: (200, {"action": "accept", "modifications": [
        {"type": "changeHeader", "index": 1, "name": "Subject", "value": "Changed"},
        {"type": "deleteHeader", "index": 1, "name": "X-Folded"},
        {"type": "insertHeader", "index": 0, "name": "X-First", "value": "1"},
        {"type": "addRecipient", "value": "other@example.org", "parameters": {"NOTIFY": None}},
        {"type": "deleteRecipient", "value": "agent@example.org"},
        {"type": "replaceContents", "value": "New body.\r\n"}]}), stages={"data": True})
    send(standin, "alice@example.net", ["agent@example.org"])
    assert inbox_raw(standin, account_id) == []
    other_account = call(standin, ["x:Account/query", {"filter": {"name": "other@example.org"}}, "0"])[0][1]["ids"][0]
    [stored] = inbox_raw(standin, other_account, auth=("other@example.org", "pw2"))
    assert b"Subject: Changed\r\n" in stored and b"X-Folded" not in stored
    assert stored.endswith(b"\r\n\r\nNew body.\r\n") and b"X-First: 1\r\nFrom:" in stored


def test_remote_recipients_go_to_the_outbox_and_the_relay(tmp_path: Path) -> None:
    import smtplib
    import threading
    import time

    relayed: list[bytes] = []
    relay_port = free_port()
    ready = threading.Event()

    def relay_server() -> None:  # the smallest SMTP receiver that smtplib accepts
        import socket

        with socket.create_server(("127.0.0.1", relay_port)) as server:
            ready.set()
            connection, _ = server.accept()
            with connection, connection.makefile("rb") as reader:
                connection.sendall(b"220 relay\r\n")
                data = False
                lines: list[bytes] = []
                for line in reader:
                    if data:
                        if line == b".\r\n":
                            relayed.append(b"".join(lines))
                            data = False
                            connection.sendall(b"250 ok\r\n")
                        else:
                            lines.append(line)
                    elif line.upper().startswith(b"DATA"):
                        data = True
                        connection.sendall(b"354 go\r\n")
                    elif line.upper().startswith(b"QUIT"):
                        connection.sendall(b"221 bye\r\n")
                        return
                    else:
                        connection.sendall(b"250 ok\r\n")

    threading.Thread(target=relay_server, daemon=True).start()
    ready.wait(5)
    with make_standin(tmp_path, configured=True, relay=f"127.0.0.1:{relay_port}") as process:
        provision(process)
        with smtplib.SMTP("127.0.0.1", process.smtp_port, timeout=10) as smtp:
            smtp.sendmail("agent@example.org", ["bob@remote.example"], MESSAGE)
        [sent] = control(process, "outbox")
        assert sent["from"] == "agent@example.org" and sent["to"] == ["bob@remote.example"]
        assert sent["raw"].startswith("Received: ") and sent["raw"].endswith("See you.\r\n")
        for _ in range(100):
            if relayed:
                break
            time.sleep(0.05)
        assert relayed and relayed[0].endswith(b"See you.\r\n")


def submit(process: StandinProcess, account_id: str, raw: bytes, envelope: dict[str, Any] | None = None,
           ) -> list[Any]:
    """Import ``raw`` into Drafts and submit it, moving it to Sent on success."""
    email_id = import_message(process, account_id, raw, role="drafts")
    boxes = mail(process, ["Mailbox/get", {"ids": None}, "0"])[0][1]["list"]
    sent = next(b["id"] for b in boxes if b["role"] == "sent")
    item: dict[str, Any] = {"identityId": mail(process, ["Identity/get", {}, "0"], using=SUBMIT_USING)[0][1][
        "list"][0]["id"], "emailId": email_id}
    if envelope is not None:
        item["envelope"] = envelope
    return mail(process, ["EmailSubmission/set", {"create": {"s": item}, "onSuccessUpdateEmail": {
        "#s": {f"mailboxIds/{sent}": True, "keywords/$draft": None}}}, "0"], using=SUBMIT_USING)


OUTGOING = b"From: agent@example.org\r\nTo: bob@remote.example\r\nCc: other@example.org\r\nSubject: Hi\r\n\r\nHi.\r\n"


def test_submission_runs_the_hooks_as_a_local_authenticated_session(standin: StandinProcess,
                                                                    receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    provision(standin, "other@example.org", "pw2")
    receiver = add_hook(standin, receivers, accept_with_header)
    responses = submit(standin, account_id, OUTGOING)
    assert responses[0][0] == "EmailSubmission/set" and "s" in responses[0][1]["created"], responses
    assert responses[1][0] == "Email/set" and responses[1][1]["updated"]
    stages = [(body["context"]["stage"], [t["address"] for t in body["envelope"]["to"]])
              for _, body in receiver.requests]
    assert stages == [("rcpt", ["bob@remote.example"]), ("rcpt", ["bob@remote.example", "other@example.org"]),
                      ("data", ["bob@remote.example", "other@example.org"])]
    context = receiver.requests[-1][1]["context"]
    assert context["client"] == {"ip": "127.0.0.1", "port": 0, "ptr": None, "helo": "localhost",
                                 "activeConnections": 1}
    assert context["sasl"] == {"login": "agent@example.org"}
    [outgoing] = control(standin, "outbox")
    assert outgoing["to"] == ["bob@remote.example"] and "X-Appliance-Decision: d-1" in outgoing["raw"]
    submission_id = responses[0][1]["created"]["s"]["id"]
    [listed] = mail(standin, ["EmailSubmission/get", {"ids": None}, "0"], using=SUBMIT_USING)[0][1]["list"]
    assert listed["id"] == submission_id and listed["undoStatus"] == "final"


def test_submission_refused_by_the_hook_is_forbidden_to_send(standin: StandinProcess,
                                                             receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    add_hook(standin, receivers, lambda body: (200, {"action": "reject", "response": {
        "status": 550, "enhanced_status": "5.7.1", "message": "not approved by the outbox"}}), stages={"data": True})
    responses = submit(standin, account_id, OUTGOING, {"mailFrom": {"email": "agent@example.org"},
                                                       "rcptTo": [{"email": "bob@remote.example"}]})
    assert responses[0][1]["notCreated"]["s"] == {"type": "forbiddenToSend",
                                                  "description": "not approved by the outbox"}
    assert control(standin, "outbox") == []


def test_submission_hook_error_is_server_fail(standin: StandinProcess, receivers: list[HookReceiver]) -> None:
    _, account_id = provision(standin)
    add_hook(standin, receivers, lambda body: (503, {}))
    responses = submit(standin, account_id, OUTGOING)
    assert responses[0][1]["notCreated"]["s"]["type"] == "serverFail"


def test_hook_secret_from_an_environment_variable_is_sent(standin: StandinProcess,
                                                          receivers: list[HookReceiver]) -> None:
    provision(standin)
    receiver = add_hook(standin, receivers, lambda body: (200, {"action": "accept"}), stages={"rcpt": True},
                        httpAuth={"@type": "Basic", "username": "u", "secret": {
                            "@type": "EnvironmentVariable", "variableName": "STALWART_RECOVERY_ADMIN"}})
    send(standin, "alice@example.net", ["agent@example.org"])
    import base64

    assert receiver.requests[0][0]["Authorization"] == "Basic " + base64.b64encode(b"u:admin:secret").decode()
