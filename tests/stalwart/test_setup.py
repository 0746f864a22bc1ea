"""The provisioning planner (pure): what Stalwart must hold, and the steps from what it holds now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.config import AgentConfig, ApplianceConfig, HttpConfig, StalwartConfig
from appliance.stalwart.setup import (
    HOOK_DESCRIPTION,
    CreateAccount,
    CreateApiKey,
    CreateCertificate,
    CreateDomain,
    CreateHook,
    DesiredSetup,
    DestroyHook,
    Observed,
    ObservedCertificate,
    ObservedHook,
    Recorded,
    RecordedAccount,
    ReloadCertificates,
    SetPassword,
    UpdateCertificate,
    UpdateHook,
    certificate_object,
    desired_setup,
    fingerprint,
    hook_object,
    plan,
)

ENV = {"STALWART_HOOK_SECRET": "hook-secret", "AGENT_PW": "agent-password", "OTHER_KEY": "API_abc"}


def config(tmp_path: Path, **stalwart: Any) -> ApplianceConfig:
    return ApplianceConfig(
        mode="stalwart", hostname="mx.example.test", data_dir=str(tmp_path),
        http=HttpConfig(listen="0.0.0.0:8025"), stalwart=StalwartConfig(**stalwart),
        agents=[AgentConfig(address="Agent@Example.test", policy="p.toml", stalwart_secret_env="AGENT_PW"),
                AgentConfig(address="other@example.org", policy="p.toml", stalwart_secret_env="OTHER_KEY")])


@pytest.fixture
def desired(tmp_path: Path) -> DesiredSetup:
    return desired_setup(config(tmp_path), ENV)


def as_configured(desired: DesiredSetup) -> tuple[Observed, Recorded]:
    """Stalwart exactly as ``desired`` wants it, and the appliance's record of having made it so."""
    accounts = {a.agent: f"acc-{i}" for i, a in enumerate(desired.accounts)}
    observed = Observed(domains={d: f"dom-{d}" for d in desired.domains}, accounts=accounts,
                        api_keys=[f"key-{a}" for a in accounts],
                        hooks=[ObservedHook(id="h1", properties={"id": "h1", **hook_object(desired.hook)})])
    recorded = Recorded(hook_id="h1", hook_fingerprint=fingerprint(desired.hook.secret), accounts={
        a.agent: RecordedAccount(account_id=accounts[a.agent], api_key_id=f"key-{a.agent}",
                                 password_fingerprint=fingerprint(a.password) if a.password else None)
        for a in desired.accounts})
    return observed, recorded


def test_the_desired_setup_names_every_agent_domain_and_the_hook_on_loopback(desired: DesiredSetup) -> None:
    assert desired.domains == ["example.org", "example.test"]
    assert [(a.agent, a.password) for a in desired.accounts] == [
        ("agent@example.test", "agent-password"), ("other@example.org", None)]  # an API_ key is no password
    assert desired.hook.url == "http://127.0.0.1:8025/hooks/mta"  # a wildcard listen is called on loopback
    assert desired.default_domain == "example.test" and not desired.request_tls  # the first agent's


def test_the_hook_is_rcpt_and_data_bearer_and_never_fails_open(desired: DesiredSetup) -> None:
    hook = hook_object(desired.hook)
    assert hook["stages"] == {"rcpt": True, "data": True}
    assert hook["tempFailOnError"] is True
    assert isinstance(hook["timeout"], int)
    assert hook["httpAuth"] == {"@type": "Bearer", "bearerToken": {"@type": "Value", "secret": "hook-secret"}}


def test_without_the_hook_secret_the_setup_says_which_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="STALWART_HOOK_SECRET"):
        desired_setup(config(tmp_path), {})


def test_an_explicit_hook_url_and_an_https_public_url_are_used(tmp_path: Path) -> None:
    d = desired_setup(config(tmp_path, hook_url="http://10.0.0.2:9000/hooks/mta",
                             public_url="https://mail.example.test"), ENV)
    assert d.hook.url == "http://10.0.0.2:9000/hooks/mta" and d.request_tls


def test_a_first_run_creates_everything(desired: DesiredSetup) -> None:
    steps = plan(desired, Observed(domains={}, accounts={}, api_keys=[], hooks=[]), Recorded())
    kinds = [type(s) for s in steps]
    assert kinds == [CreateDomain, CreateDomain, CreateAccount, CreateApiKey, CreateAccount, CreateApiKey,
                     CreateHook]
    assert all(not s.why.startswith("drift") for s in steps)


def test_a_second_run_changes_nothing(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    assert plan(desired, observed, recorded) == []


def test_a_deleted_hook_is_drift_and_recreated(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    gone = Observed(domains=observed.domains, accounts=observed.accounts, api_keys=observed.api_keys, hooks=[])
    steps = plan(desired, gone, recorded)
    assert len(steps) == 1 and isinstance(steps[0], CreateHook) and steps[0].why.startswith("drift")


def test_a_hook_edited_by_hand_is_put_back(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    edited = {**observed.hooks[0].properties, "tempFailOnError": False, "stages": {"data": True}}
    steps = plan(desired, Observed(domains=observed.domains, accounts=observed.accounts,
                                   api_keys=observed.api_keys, hooks=[ObservedHook(id="h1", properties=edited)]),
                 recorded)
    assert len(steps) == 1 and isinstance(steps[0], UpdateHook)
    assert "stages" in steps[0].why and "tempFailOnError" in steps[0].why


def test_a_changed_hook_secret_is_updated_even_when_stalwart_hides_it(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    hidden = {**observed.hooks[0].properties, "httpAuth": {"@type": "Bearer"}}
    hooks = [ObservedHook(id="h1", properties=hidden)]
    same = Observed(domains=observed.domains, accounts=observed.accounts, api_keys=observed.api_keys, hooks=hooks)
    assert plan(desired, same, recorded) == []  # the recorded fingerprint matches: nothing to do
    rotated = Recorded(hook_id="h1", hook_fingerprint=fingerprint("the old secret"), accounts=recorded.accounts)
    steps = plan(desired, same, rotated)
    assert len(steps) == 1 and isinstance(steps[0], UpdateHook) and "secret" in steps[0].why


def test_a_second_copy_of_our_hook_is_destroyed(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    copy = ObservedHook(id="h2", properties={"id": "h2", **hook_object(desired.hook)})
    steps = plan(desired, Observed(domains=observed.domains, accounts=observed.accounts,
                                   api_keys=observed.api_keys, hooks=[*observed.hooks, copy]), recorded)
    assert steps == [DestroyHook(id="h2", why=steps[0].why)]


def test_an_operators_own_hook_is_left_alone(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    theirs = ObservedHook(id="h9", properties={"id": "h9", "description": "spam filter",
                                               "url": "http://127.0.0.1:11333/hook"})
    assert plan(desired, Observed(domains=observed.domains, accounts=observed.accounts,
                                  api_keys=observed.api_keys, hooks=[*observed.hooks, theirs]), recorded) == []
    assert HOOK_DESCRIPTION != "spam filter"


def test_a_deleted_account_or_api_key_is_recreated(desired: DesiredSetup) -> None:
    observed, recorded = as_configured(desired)
    no_account = Observed(domains=observed.domains, accounts={"other@example.org": "acc-1"},
                          api_keys=observed.api_keys, hooks=observed.hooks)
    steps = plan(desired, no_account, recorded)
    assert [type(s) for s in steps] == [CreateAccount, CreateApiKey]
    assert steps[0].why.startswith("drift")
    no_key = Observed(domains=observed.domains, accounts=observed.accounts, api_keys=["key-agent@example.test"],
                      hooks=observed.hooks)
    steps = plan(desired, no_key, recorded)
    assert steps == [CreateApiKey(agent="other@example.org", why=steps[0].why)]


def test_a_changed_agent_password_is_set_again(desired: DesiredSetup, tmp_path: Path) -> None:
    observed, recorded = as_configured(desired)
    changed = desired_setup(config(tmp_path), {**ENV, "AGENT_PW": "a new password"})
    steps = plan(changed, observed, recorded)
    assert len(steps) == 1 and isinstance(steps[0], SetPassword)
    assert steps[0].account_id == "acc-0"


# -- the certificate HTTPS uses, shared with SMTP --------------------------------------------------

CERT_PATH, KEY_PATH = "/var/lib/appliance-tls/fullchain.pem", "/var/lib/appliance-tls/privkey.pem"


def with_certificate(tmp_path: Path, pem: bytes | None) -> DesiredSetup:
    return desired_setup(config(tmp_path, tls_certificate=CERT_PATH, tls_private_key=KEY_PATH), ENV, pem)


def holding(desired: DesiredSetup, certificate_id: str = "c1") -> tuple[Observed, Recorded]:
    """Stalwart as configured, holding the shared certificate the appliance loaded."""
    assert desired.certificate is not None
    observed, recorded = as_configured(desired)
    observed = msgspec.structs.replace(observed, certificates=[ObservedCertificate(
        id=certificate_id, properties={"id": certificate_id, **certificate_object(desired.certificate)})])
    recorded = msgspec.structs.replace(recorded, certificate_id=certificate_id,
                                       certificate_fingerprint=desired.certificate.fingerprint)
    return observed, recorded


def test_without_a_configured_certificate_nothing_is_planned_for_one(desired: DesiredSetup) -> None:
    assert desired.certificate is None
    assert plan(desired, *as_configured(desired)) == []


def test_a_configured_certificate_whose_file_is_not_there_yet_waits(tmp_path: Path) -> None:
    desired = with_certificate(tmp_path, None)
    assert desired.certificate is None and not desired.request_tls
    assert plan(desired, *as_configured(desired)) == []


def test_the_certificate_is_added_from_its_files_and_loaded(tmp_path: Path) -> None:
    desired = with_certificate(tmp_path, b"-----BEGIN CERTIFICATE-----\nA\n")
    steps = plan(desired, *as_configured(desired))
    assert [type(s) for s in steps] == [CreateCertificate, ReloadCertificates]
    assert desired.certificate is not None
    assert certificate_object(desired.certificate) == {
        "certificate": {"@type": "File", "filePath": CERT_PATH},
        "privateKey": {"@type": "File", "filePath": KEY_PATH}}


def test_the_same_certificate_file_changes_nothing(tmp_path: Path) -> None:
    desired = with_certificate(tmp_path, b"cert one")
    assert plan(desired, *holding(desired)) == []


def test_a_renewed_certificate_file_is_reloaded_without_a_new_object(tmp_path: Path) -> None:
    observed, recorded = holding(with_certificate(tmp_path, b"cert one"))
    renewed = with_certificate(tmp_path, b"cert two")
    steps = plan(renewed, observed, recorded)
    assert steps == [ReloadCertificates(certificate_id="c1", why="the certificate file changed (renewed)")]


def test_a_deleted_certificate_is_drift_and_added_again(tmp_path: Path) -> None:
    desired = with_certificate(tmp_path, b"cert one")
    observed, recorded = holding(desired)
    steps = plan(desired, msgspec.structs.replace(observed, certificates=[]), recorded)
    assert [type(s) for s in steps] == [CreateCertificate, ReloadCertificates]
    assert steps[0].why.startswith("drift")


def test_a_certificate_pointed_elsewhere_by_hand_is_put_back(tmp_path: Path) -> None:
    desired = with_certificate(tmp_path, b"cert one")
    observed, recorded = holding(desired)
    edited = ObservedCertificate(id="c1", properties={
        "id": "c1", "certificate": {"@type": "File", "filePath": CERT_PATH},
        "privateKey": {"@type": "Text", "secret": "-----BEGIN PRIVATE KEY-----"}})
    steps = plan(desired, msgspec.structs.replace(observed, certificates=[edited]), recorded)
    assert [type(s) for s in steps] == [UpdateCertificate, ReloadCertificates]
