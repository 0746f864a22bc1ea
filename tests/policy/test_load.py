import json
import re
from pathlib import Path

import pytest
import yaml

from appliance.cli import main
from appliance.errors import PolicyError
from appliance.policy import ContentGuard, MailPolicy, Match, SenderRule, load_policy, policy_to_builtins

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return [str(p) for p in caught.value.problems]


def test_python_and_toml_examples_load_equal() -> None:
    from_python = load_policy(EXAMPLES / "policy.py")
    from_toml = load_policy(EXAMPLES / "policy.toml")
    assert from_python == from_toml
    assert from_toml.senders[0].match.address == "boss@acme.com"
    assert from_toml.senders[0].token_budget is not None
    assert from_toml.senders[0].token_budget.per_thread == 20_000
    assert from_toml.content_guards[0].reject.flags & re.IGNORECASE


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_yaml_and_json_carry_the_same_policy(tmp_path: Path, suffix: str) -> None:
    data = policy_to_builtins(load_policy(EXAMPLES / "policy.toml"))
    data["contentGuards"][0]["reject"] = "/ignore (previous|all) instructions/i"
    path = tmp_path / f"policy{suffix}"
    path.write_text(yaml.safe_dump(data) if suffix == ".yaml" else json.dumps(data))
    assert load_policy(path) == load_policy(EXAMPLES / "policy.toml")


def test_wrong_type_names_file_path_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[senders]]\nmatch = { address = "a@b.example" }\n'
                    '[[senders]]\nmatch = { address = "c@d.example" }\nrateLimit = { perHour = "20" }\n')
    assert problems_of(path) == [f"{path}: senders[1].rateLimit.perHour: expected int, got str"]


def test_bad_regex_names_its_position(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[contentGuards]]\nreject = "/ignore (previous/i"\nreason = "x"\n')
    [problem] = problems_of(path)
    assert "contentGuards[0].reject" in problem
    assert "position 7" in problem


def test_guard_as_table_with_flags(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[contentGuards]]\nreject = { pattern = "wire .* now", flags = "is" }\nreason = "fraud"\n')
    guard = load_policy(path).content_guards[0]
    assert guard.reject.flags & re.IGNORECASE and guard.reject.flags & re.DOTALL
    assert guard.reject.search("WIRE the\nmoney NOW")


def test_unknown_flag_and_unknown_field_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[contentGuards]]\nreject = "/x/q"\n')
    assert "unknown regex flag 'q'" in problems_of(path)[0]
    path.write_text('defaultAction = "bounce"\nsendres = []\n')
    assert problems_of(path) == [f"{path}: sendres: unknown field (check its spelling)"]


def test_semantic_problems_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"senders": [
        {"match": {}},
        {"match": {"address": "not-an-address"}},
        {"match": {"domain": "*.", "address": "a@b.example"}},
    ]}))
    found = problems_of(path)
    assert len(found) == 4
    assert any("senders[0].match: expected exactly one of address or domain" in p for p in found)
    assert any("senders[1].match.address" in p for p in found)


def test_python_module_is_validated_like_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.py"
    path.write_text("from appliance.policy import *\n"
                    "policy = MailPolicy(senders=[SenderRule(match=Match(address='x'))])\n")
    assert problems_of(path) == [f"{path}: senders[0].match.address: expected local@domain, got 'x'"]


def test_python_module_without_policy_attribute(tmp_path: Path) -> None:
    path = tmp_path / "policy.py"
    path.write_text("x = 1\n")
    assert "expected a module attribute `policy` of type MailPolicy, got NoneType" in problems_of(path)[0]


def test_syntax_errors_and_missing_files_are_problems(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("defaultAction = \n")
    assert "not valid toml" in problems_of(path)[0]
    assert "No such file" in problems_of(tmp_path / "absent.toml")[0]
    weird = tmp_path / "policy.ini"
    weird.write_text("")
    assert "unknown policy format" in problems_of(weird)[0]


def test_policy_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(EXAMPLES / "policy.toml")]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "2 sender rule(s)" in out
    bad = tmp_path / "policy.toml"
    bad.write_text('[[senders]]\nmatch = { address = "a@b.example" }\nrateLimit = { perHour = "20" }\n')
    assert main(["policy", "check", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"{bad}: senders[0].rateLimit.perHour: expected int, got str"


def test_constructed_policy_round_trips() -> None:
    policy = MailPolicy(senders=[SenderRule(match=Match(domain="*.acme.com"), capabilities=["a"])],
                        content_guards=[ContentGuard(reject=re.compile("x", re.I | re.M), reason="r")])
    data = policy_to_builtins(policy)
    assert data["contentGuards"][0]["reject"] == {"pattern": "x", "flags": "im"}
    assert data["senders"][0]["match"]["domain"] == "*.acme.com"


def match_problems(tmp_path: Path, **match: str) -> list[str]:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"senders": [{"match": match}]}))
    return [p.removeprefix(f"{path}: ") for p in problems_of(path)]


def test_leading_dot_domain_is_refused_with_the_fix(tmp_path: Path) -> None:
    # ".acme.com" used to load and then match nothing at all.
    assert match_problems(tmp_path, domain=".acme.com") == [
        'senders[0].match.domain: \'.acme.com\' matches nothing: use "*.acme.com" for subdomains '
        'or "acme.com" for the domain itself']


@pytest.mark.parametrize(("domain", "says"), [
    ("", 'expected a domain like "acme.com" or "*.acme.com"'),
    ("boss@acme.com", 'use address = "boss@acme.com" for that one sender, or domain = "acme.com"'),
    ("@acme.com", 'use domain = "acme.com"'),
    ("acme .com", "without spaces"),
    (" acme.com", "without spaces"),
    ("*.", "names no domain"),
    ("*", 'only a leading "*." is a wildcard'),
    ("*acme.com", 'only a leading "*." is a wildcard'),
    ("a.*.acme.com", 'only a leading "*." is a wildcard'),
    ("acme..com", "empty label"),
    ("acme.com..", "empty label"),
    (".", 'expected a domain like "acme.com"'),
    ("acme", "single label"),
    ("*.com", "single label"),
    ("acme,com", "holds ','"),
    ("acme.com/", "holds '/'"),
    ("bü_cher.de", "not a valid internationalized domain name"),
    ("a" * 64 + ".com", "over 63 characters"),
])
def test_nonsense_domains_are_refused_clearly(tmp_path: Path, domain: str, says: str) -> None:
    [problem] = match_problems(tmp_path, domain=domain)
    assert problem.startswith("senders[0].match.domain: ")
    assert says in problem


@pytest.mark.parametrize("domain", ["acme.com", "acme.com.", "*.acme.com", "*.acme.com.", "Example.COM",
                                    "bücher.de", "straße.de", "*.review.localhost", "xn--bcher-kva.de"])
def test_domain_forms_that_load(tmp_path: Path, domain: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"senders": [{"match": {"domain": domain}}]}))
    assert load_policy(path).senders[0].match.domain == domain


@pytest.mark.parametrize(("address", "says"), [
    ("boss", "expected local@domain, got 'boss'"),
    ("boss@acme@com", "exactly one @"),
    ("@acme.com", 'use domain = "acme.com" for a whole domain'),
    ("boss@", "a domain like acme.com after the @"),
    ("Boss <boss@acme.com>", 'without a display name or <>, got \'Boss <boss@acme.com>\': use "boss@acme.com"'),
    ("<boss@acme.com>", 'use "boss@acme.com"'),
    ("boss @acme.com", "without spaces"),
    ("bo,ss@acme.com", "cannot hold ','"),
    ("boss@*.acme.com", 'use domain = "*.acme.com"'),
    ("boss@.acme.com", "a domain like acme.com after the @"),
    ("boss@acme..com", "empty label"),
])
def test_address_must_be_one_bare_addr_spec(tmp_path: Path, address: str, says: str) -> None:
    [problem] = match_problems(tmp_path, address=address)
    assert problem.startswith("senders[0].match.address: ")
    assert says in problem


@pytest.mark.parametrize("address", ["boss@acme.com", "BOSS@Acme.COM", "a+tag@example.org", "info@bücher.de",
                                     "root@localhost", "boss@acme.com."])
def test_address_forms_that_load(tmp_path: Path, address: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"senders": [{"match": {"address": address}}]}))
    assert load_policy(path).senders[0].match.address == address
