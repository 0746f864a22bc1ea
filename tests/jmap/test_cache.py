"""The in-memory list index answers exactly what SQL answers, in the same snapshot, with the same state."""

from __future__ import annotations

import random
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from appliance.jmap.cache import AccountIndex
from tests.jmap.conftest import call, deliver, message


def as_sql(filter_: dict[str, Any] | None) -> dict[str, Any]:
    """The same filter, spelled so the list index does not take it (an AND of one condition)."""
    return {"operator": "AND", "conditions": [filter_ or {}]}


async def test_listings_agree_with_sql(client: AsyncTestClient,  # type: ignore[type-arg]
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pages: list[object] = []
    original = AccountIndex.page

    def counted(self: AccountIndex, *args: Any, **kwargs: Any) -> Any:
        pages.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AccountIndex, "page", counted)
    rng = random.Random(5)
    roots: list[str] = []
    for i in range(40):
        parent = rng.choice(roots) if roots and rng.random() < 0.5 else None
        mid = f"<c{i}@example.net>"
        await deliver(client, message(subject=f"s{i}", message_id=mid, in_reply_to=parent))
        roots.append(mid)
    ids = (await call(client, "Email/query", {}))[1]["ids"]
    for email_id in rng.sample(ids, 15):
        await call(client, "Email/set", {"update": {email_id: {"mailboxIds": rng.choice(
            [{"archive": True}, {"inbox": True, "archive": True}, {"trash": True}])}}})
    await call(client, "Email/set", {"destroy": rng.sample(ids, 3)})
    for filter_ in (None, {"inMailbox": "inbox"}, {"inMailbox": "archive"}, {"inMailbox": "nope"}):
        for ascending in (True, False):
            for collapse in (False, True):
                all_ids = (await call(client, "Email/query", {"filter": as_sql(filter_), "collapseThreads": collapse,
                                                              "sort": [{"property": "receivedAt",
                                                                        "isAscending": ascending}]}))[1]["ids"]
                windows: list[dict[str, Any]] = [{"position": 0, "limit": 7}, {"position": 5, "limit": 3},
                                                 {"position": -4}, {"position": 1000}, {"limit": 0}]
                if all_ids:
                    windows += [{"anchor": all_ids[len(all_ids) // 2], "anchorOffset": -2, "limit": 4},
                                {"anchor": all_ids[0], "anchorOffset": 3}]
                windows.append({"anchor": "nope"})
                for window in windows:
                    args = {"collapseThreads": collapse, "calculateTotal": True,
                            "sort": [{"property": "receivedAt", "isAscending": ascending}], **window}
                    fast = await call(client, "Email/query", {**args, **({"filter": filter_} if filter_ else {})})
                    slow = await call(client, "Email/query", {**args, "filter": as_sql(filter_)})
                    assert fast == slow, (filter_, ascending, collapse, window)
    assert len(pages) > 100  # the listings were the list index's
