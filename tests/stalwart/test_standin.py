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
def test_image_builds_and_serves_health_from_a_container() -> None:
    import time

    import docker

    from tests.images import docker_available, standin_image

    if not docker_available():
        pytest.skip("no Docker Engine answers here")
    image = standin_image()
    assert image.startswith("appliance-stalwart-standin:")
    port = free_port()
    client = docker.from_env()
    container = client.containers.run(
        image, detach=True, network_mode="host",
        environment={"STALWART_RECOVERY_ADMIN": "admin:secret", "STANDIN_HTTP": f"127.0.0.1:{port}",
                     "STANDIN_SMTP": f"127.0.0.1:{free_port()}"})
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
