from pathlib import Path

import pytest

from appliance.config import load_config, parse_hostport
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
