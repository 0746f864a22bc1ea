"""The Policies page: each agent's policy in force and its reloads, a refused one with its reason."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tests.conftest import AGENT, OTHER_AGENT
from tests.dashboard.app import DashboardApp


def section(html: str, agent: str) -> str:
    start = html.index(f'data-agent="{agent}"')
    end = html.find("</section>", start)
    return html[start:end]


def test_every_agent_shows_its_file_and_the_policy_in_force(dashboard: DashboardApp, tmp_path: Path) -> None:
    client, _ = dashboard.login()
    shown = client.get("/ui/policies")
    assert shown.status_code == 200
    mine = section(shown.text, AGENT)
    assert str(tmp_path / "policy0.toml") in mine
    assert "&#34;defaultAction&#34;: &#34;bounce&#34;" in mine or "&quot;defaultAction&quot;" in mine
    assert "held.example" in mine and "No reload recorded" in mine
    assert str(tmp_path / "policy1.toml") in section(shown.text, OTHER_AGENT)


def test_a_bad_edit_is_listed_as_refused_and_the_last_good_policy_stays_shown(
        dashboard: DashboardApp, tmp_path: Path) -> None:
    client, _ = dashboard.login()
    path = tmp_path / "policy0.toml"
    path.write_text('defaultAction = "explode"\n')
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))  # a changed mtime even on a coarse clock
    for _ in range(100):  # the watcher looks every second
        mine = section(client.get("/ui/policies").text, AGENT)
        if 'data-type="policy.rejected"' in mine:
            break
        time.sleep(0.1)
    assert 'data-type="policy.rejected"' in mine and "keeping the last good policy" in mine
    assert re.search(r"defaultAction.{0,12}bounce", mine)  # the last good policy is still in force
