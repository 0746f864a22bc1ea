"""The official RFC 7208 test suite (openspf.org, shipped in pyspf's sdist), over loopback DNS.

Not part of the repository: set PYSPF_TESTSUITE to the suite's YAML file to run it,
otherwise these tests are skipped:

    pip download pyspf --no-binary :all: --no-deps && tar xzf pyspf-*.tar.gz
    export PYSPF_TESTSUITE=$PWD/pyspf-2.0.14/test/rfc7208-tests.yml
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.mailauth import DnsResolver, check_spf
from tests.dnsserver import DnsTestServer, Record

SUITE = os.environ.get("PYSPF_TESTSUITE", "")
TYPES = ("A", "AAAA", "MX", "PTR", "TXT", "CNAME")


def _scenarios() -> list[dict[str, Any]]:
    if not SUITE or not Path(SUITE).is_file():
        return []
    with open(SUITE, "rb") as handle:
        return list(yaml.safe_load_all(handle))


SCENARIOS = _scenarios()
CASES = [
    pytest.param(index, name, case, id=name)
    for index, scenario in enumerate(SCENARIOS)
    for name, case in sorted(scenario["tests"].items())
]


def _zone(zonedata: dict[str, list[Any]]) -> DnsTestServer:
    """The suite's zone as served records; as its reference driver does, SPF-type records
    stand in as TXT where a name has no TXT, and TIMEOUT times out every type not listed
    before it."""
    server = DnsTestServer(negative_ttl=300)
    for name, entries in zonedata.items():
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        seen: set[str] = set()
        for entry in entries:
            if entry == "TIMEOUT":
                for rdtype in TYPES:
                    if rdtype not in seen:
                        server.fail(name, rdtype, "timeout")
                continue
            for rdtype, value in entry.items():
                if rdtype == "SPF":
                    if has_txt:
                        continue
                    rdtype = "TXT"
                if value == "NONE":
                    continue
                seen.add(rdtype)
                if rdtype == "TXT":
                    value = tuple(value) if isinstance(value, list) else (value,)
                    if not value:
                        # A TXT record of no strings: dnspython rejects the whole reply,
                        # so it cannot be served as the suite means it; leave it out.
                        continue
                elif rdtype == "MX":
                    value = f"{value[0]} {value[1] or '.'}"
                server.add(Record(name, rdtype, value))
    return server


@pytest.fixture(scope="module")
def zones() -> Iterator[dict[int, DnsTestServer]]:
    started: dict[int, DnsTestServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.mark.skipif(not CASES, reason="set PYSPF_TESTSUITE to pyspf's test/rfc7208-tests.yml")
@pytest.mark.parametrize(("index", "name", "case"), CASES)
async def test_rfc7208_suite(zones, index, name, case):
    if case.get("strict") == 2:
        pytest.skip("pyspf's harsh mode, not the RFC")
    if index not in zones:
        zones[index] = _zone(SCENARIOS[index]["zonedata"]).start()
    resolver = DnsResolver([zones[index].address], timeout=0.2)
    result = await check_spf(str(case["host"]), str(case["helo"]), str(case["mailfrom"]), resolver)
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert result.result in expected, f"{case.get('spec')}: {case.get('description', '')} " \
                                      f"{result.detail}"
