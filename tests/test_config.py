from pathlib import Path

import msgspec
import pytest

from appliance.config import environment_warnings, load_config, parse_hostport, stalwart_mode_problems
from appliance.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policy.toml").write_text('defaultAction = "bounce"\n')
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_example_sandbox_config_loads() -> None:
    config = load_config(EXAMPLES / "appliance.toml", environ={})
    assert config.mode == "sandbox"
    assert config.agents[0].address == "agent@sandbox.localhost"
    assert config.path(config.agents[0].policy).is_file()


def test_environment_overrides_sections_and_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2525"\n')
    config = load_config(path, environ={"APPLIANCE_SMTP_LISTEN": "127.0.0.1:2600",
                                        "APPLIANCE_SMTP_MAX_MESSAGE_SIZE": "2048",
                                        "APPLIANCE_DNS_NAMESERVERS": '["127.0.0.1:5353"]',
                                        "APPLIANCE_MODE": "stalwart", "APPLIANCE_DATA_DIR": "/srv/data",
                                        "UNRELATED": "x"})
    assert config.smtp.listen == "127.0.0.1:2600"
    assert config.smtp.max_message_size == 2048
    assert config.dns.nameservers == ["127.0.0.1:5353"]
    assert config.mode == "stalwart"
    assert config.data_path == Path("/srv/data")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "var"\n[[agents]]\naddress = "a@example.test"\npolicy = "policy.toml"\n')
    config = load_config(path, environ={})
    assert config.data_path == tmp_path / "var"


@pytest.mark.parametrize(("text", "expected"), [
    ('[smtp]\nmax_message_size = "big"\n', "appliance.toml: smtp.max_message_size: expected int, got str"),
    ('[smtp]\nlisten = "nowhere"\n', "appliance.toml: smtp.listen: expected host:port, got 'nowhere'"),
    ('mode = "cloud"\n', "appliance.toml: mode: expected one of 'sandbox', 'stalwart', got 'cloud'"),
    ('[smtp]\nlisen = "x"\n', "appliance.toml: smtp.lisen: unknown field (check its spelling)"),
    ('[[agents]]\naddress = "a@example.test"\npolicy = "missing.toml"\n', "agents[0].policy: no such file"),
    ('[stalwart]\ntls_certificate = "/etc/tls/cert.pem"\n',
     "stalwart: tls_certificate and tls_private_key go together"),
    ('[stalwart]\ntls_certificate = "cert.pem"\ntls_private_key = "/k.pem"\n',
     "stalwart.tls_certificate: expected an absolute path (Stalwart reads it there), got 'cert.pem'"),
])
def test_bad_values_name_field_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert expected.split(": ", 1)[1] in message, message


def test_parse_hostport_accepts_ipv6() -> None:
    assert parse_hostport("[::1]:25", field="x") == ("::1", 25)
    with pytest.raises(ValueError, match="x: expected host:port"):
        parse_hostport("::1", field="x")


@pytest.mark.parametrize(("environ", "expected"), [
    ({"APPLIANCE_SMTP_MAX_MESSAGE_SIZE": "big"},
     "environment variable APPLIANCE_SMTP_MAX_MESSAGE_SIZE: smtp.max_message_size: expected int, got str"),
    ({"APPLIANCE_SMTP_LISTEN": "nowhere"},
     "environment variable APPLIANCE_SMTP_LISTEN: smtp.listen: expected host:port, got 'nowhere'"),
    ({"APPLIANCE_SMTP_LISEN": "127.0.0.1:25"},
     "environment variable APPLIANCE_SMTP_LISEN: smtp.lisen: unknown field (check its spelling)"),
    ({"APPLIANCE_MODE": "cloud"},
     "environment variable APPLIANCE_MODE: mode: expected one of 'sandbox', 'stalwart', got 'cloud'"),
])
def test_a_bad_environment_override_names_the_variable_not_the_file(
        tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    path = write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2525"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    assert str(caught.value) == expected
    assert str(path) not in str(caught.value)


def test_a_bad_value_in_the_file_still_names_the_file_beside_a_good_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nmax_message_size = "big"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"APPLIANCE_SMTP_LISTEN": "127.0.0.1:2600"})
    assert str(caught.value) == f"{path}: smtp.max_message_size: expected int, got str"


AGENTS = """
[http]
metrics_token_env = "METRICS_TOKEN"
[[agents]]
address = "a@example.test"
policy = "policy.toml"
webhook_url = "http://127.0.0.1:9/hook"
webhook_secret_env = "A_SECRET"
api_key_env = "A_KEY"
[[agents]]
address = "b@example.test"
policy = "policy.toml"
api_key_env = "B_KEY"
"""


def test_environment_warnings_name_each_unset_secret_once(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, AGENTS), environ={})
    warnings = environment_warnings(config, {"B_KEY": "k", "A_KEY": "  "})
    assert warnings == [
        "agent a@example.test: webhook secret $A_SECRET is not set; its webhooks fail (and are retried) until it is",
        "agent a@example.test: API key $A_KEY is not set; its event stream, message and usage calls are refused (401)",
        "http: metrics token $METRICS_TOKEN is not set; only the admin token may read /metrics",
    ]
    assert environment_warnings(config, {"A_SECRET": "whsec_x", "A_KEY": "k", "B_KEY": "k",
                                         "METRICS_TOKEN": "m"}) == []


def test_environment_warnings_in_stalwart_mode_name_the_hook_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'mode = "stalwart"\n'), environ={})
    assert environment_warnings(config, {}) == [
        "hook: $STALWART_HOOK_SECRET is not set; every call of Stalwart's MTA hook is refused (401)"]
    assert environment_warnings(config, {"STALWART_HOOK_SECRET": "s"}) == []


STALWART = """
mode = "stalwart"
[stalwart]
jmap_url = "http://127.0.0.1:8080"
admin_secret_env = "S_ADMIN"
[[agents]]
address = "a@example.test"
policy = "policy.toml"
stalwart_secret_env = "A_STALWART"
[[agents]]
address = "b@example.test"
policy = "policy.toml"
"""


def test_the_stalwart_section_and_the_agents_stalwart_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, STALWART), environ={"APPLIANCE_STALWART_JMAP_URL": "http://10.0.0.2:8080"})
    assert config.stalwart.jmap_url == "http://10.0.0.2:8080" and config.stalwart.admin_secret_env == "S_ADMIN"
    assert config.agents[0].stalwart_secret_env == "A_STALWART" and config.agents[1].stalwart_secret_env is None
    assert stalwart_mode_problems(config, "x") == []
    env = {"STALWART_HOOK_SECRET": "s", "S_ADMIN": "a", "A_STALWART": "p"}
    assert environment_warnings(config, env) == []  # managed: the appliance makes b's account and key
    unmanaged = msgspec.structs.replace(config, stalwart=msgspec.structs.replace(config.stalwart, manage=False))
    assert environment_warnings(unmanaged, env) == [
        "agent b@example.test: no Stalwart secret (stalwart_secret_env unset); its JMAP calls are answered 503"]


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://stalwart", "http://"])
def test_a_bad_stalwart_jmap_url_names_the_field(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f'[stalwart]\njmap_url = "{url}"\n'), environ={})
    assert f"stalwart.jmap_url: expected an http(s) URL, got {url!r}" in str(caught.value)


def test_stalwart_mode_problems_name_a_missing_jmap_url(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'mode = "stalwart"\n'), environ={})
    problems = stalwart_mode_problems(config, "appliance.toml")
    assert [(p.path, p.reason) for p in problems] == [
        ("stalwart.jmap_url", "stalwart mode needs Stalwart's JMAP base URL (e.g. http://127.0.0.1:8080)")]
    assert stalwart_mode_problems(load_config(write(tmp_path, ""), environ={}), "appliance.toml") == []
