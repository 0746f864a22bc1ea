"""States and changes (RFC 8620 5.2, 5.6): from any earlier state, across restarts, past retention."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.jmap.changes import prune, record_created
from appliance.store.database import Batch, utc
from appliance.store.messages import StoredMessage, save_message
from tests.conftest import AGENT
from tests.jmap.conftest import ADMIN, call, deliver, jmap, jmap_config, message, runtime_of

EMAIL_PROPERTIES = ["mailboxIds", "keywords", "threadId", "subject"]


async def snapshot(client: AsyncTestClient, type_: str) -> tuple[str, dict[str, Any]]:  # type: ignore[type-arg]
    args: dict[str, Any] = {"ids": None}
    if type_ == "Email":
        ids = (await call(client, "Email/query", {}))[1]["ids"]
        args = {"ids": ids, "properties": EMAIL_PROPERTIES}
    name, answer = await call(client, f"{type_}/get", args)
    assert name == f"{type_}/get", answer
    return answer["state"], {o["id"]: o for o in answer["list"]}


async def catch_up(client: AsyncTestClient, type_: str, state: str, objects: dict[str, Any],  # type: ignore[type-arg]
                   max_changes: int | None) -> tuple[str, dict[str, Any]]:
    """What a client does: /changes until no more, /get what was created or updated."""
    objects = {k: dict(v) for k, v in objects.items()}
    for _ in range(1000):
        args: dict[str, Any] = {"sinceState": state}
        if max_changes:
            args["maxChanges"] = max_changes
        name, found = await call(client, f"{type_}/changes", args)
        assert name == f"{type_}/changes", found
        assert found["oldState"] == state
        for gone in found["destroyed"]:
            objects.pop(gone, None)
        wanted = found["created"] + found["updated"]
        if wanted:
            props = EMAIL_PROPERTIES if type_ == "Email" else None
            if type_ == "Mailbox" and found.get("updatedProperties") and not found["created"]:
                props = found["updatedProperties"]
            args = {"ids": wanted} if props is None else {"ids": wanted, "properties": props}
            _, got = await call(client, f"{type_}/get", args)
            for obj in got["list"]:
                objects[obj["id"]] = {**objects.get(obj["id"], {}), **obj}
            for missing in got["notFound"]:
                objects.pop(missing, None)
        state = found["newState"]
        if not found["hasMoreChanges"]:
            return state, objects
    raise AssertionError("changes never ended")


class Model:
    """Random mutations through JMAP and the gate, and a snapshot of every type after each."""

    def __init__(self, client: AsyncTestClient, rng: random.Random) -> None:  # type: ignore[type-arg]
        self.client = client
        self.rng = rng
        self.message_ids: list[str] = []
        self.snapshots: list[dict[str, tuple[str, dict[str, Any]]]] = []
        self.queries: list[tuple[str, list[str], list[str]]] = []

    async def emails(self) -> list[str]:
        return list((await call(self.client, "Email/query", {}))[1]["ids"])

    async def mailboxes(self) -> list[str]:
        return list((await call(self.client, "Mailbox/query", {}))[1]["ids"])

    async def step(self, op: str) -> None:
        rng = self.rng
        emails = await self.emails()
        if op == "deliver" or not emails:
            n = len(self.message_ids)
            parent = rng.choice(self.message_ids) if self.message_ids and rng.random() < 0.5 else None
            mid = f"<m{n}.{rng.random()}@example.net>"
            await deliver(self.client, message(subject=f"s{n}" if parent is None else f"Re: s{n}", message_id=mid,
                                               in_reply_to=parent))
            self.message_ids.append(mid)
        elif op == "keyword":
            keyword = rng.choice(["$seen", "$flagged", "$draft"])
            await call(self.client, "Email/set", {"update": {rng.choice(emails): {
                f"keywords/{keyword}": rng.choice([True, None])}}})
        elif op == "move":
            boxes = await self.mailboxes()
            target = {b: True for b in rng.sample(boxes, rng.randint(1, 2))}
            await call(self.client, "Email/set", {"update": {rng.choice(emails): {"mailboxIds": target}}})
        elif op == "destroy":
            await call(self.client, "Email/set", {"destroy": [rng.choice(emails)]})
        elif op == "draft":
            await call(self.client, "Email/set", {"create": {"d": {
                "mailboxIds": {"drafts": True}, "keywords": {"$draft": True}, "subject": "draft",
                "inReplyTo": [self.message_ids[-1].strip("<>")] if self.message_ids else None,
                "bodyValues": {"t": {"value": "x"}}, "textBody": [{"partId": "t"}]}}})
        elif op == "mailbox":
            boxes = [b for b in await self.mailboxes() if b.startswith("M")]
            choice = rng.random()
            if not boxes or choice < 0.4:
                await call(self.client, "Mailbox/set", {"create": {"b": {"name": f"box{rng.random()}"}}})
            elif choice < 0.7:
                await call(self.client, "Mailbox/set", {"update": {rng.choice(boxes): {"name": f"r{rng.random()}"}}})
            else:
                await call(self.client, "Mailbox/set", {"destroy": [rng.choice(boxes)],
                                                        "onDestroyRemoveEmails": True})

    async def observe(self) -> None:
        self.snapshots.append({t: await snapshot(self.client, t) for t in ("Email", "Mailbox", "Thread")})
        for collapse in (False, True):
            _, answer = await call(self.client, "Email/query", {"filter": {"inMailbox": "inbox"},
                                                                   "collapseThreads": collapse})
            self.queries.append((answer["queryState"], answer["ids"], ["collapse"] if collapse else []))


async def check(model: Model) -> None:
    client, rng = model.client, model.rng
    current = {t: await snapshot(client, t) for t in ("Email", "Mailbox", "Thread")}
    for earlier in model.snapshots:
        for type_, (state, objects) in earlier.items():
            new_state, rebuilt = await catch_up(client, type_, state, objects, rng.choice([None, 1, 2, 5]))
            assert new_state == current[type_][0], (type_, state)
            assert rebuilt == current[type_][1], (type_, state)
    for state, ids, flags in model.queries:
        collapse = bool(flags)
        _, now = await call(client, "Email/query", {"filter": {"inMailbox": "inbox"}, "collapseThreads": collapse})
        name, delta = await call(client, "Email/queryChanges", {"filter": {"inMailbox": "inbox"},
                                                                "collapseThreads": collapse,
                                                                "sinceQueryState": state})
        assert name == "Email/queryChanges", delta
        rebuilt = [i for i in ids if i not in set(delta["removed"])]
        for added in sorted(delta["added"], key=lambda a: a["index"]):
            rebuilt.insert(added["index"], added["id"])
        assert rebuilt == now["ids"], (collapse, state)
        assert delta["newQueryState"] == now["queryState"]


OPS = st.lists(st.sampled_from(["deliver", "deliver", "keyword", "move", "destroy", "draft", "mailbox"]),
               min_size=1, max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, seed=st.integers(0, 2**32))
async def test_changes_from_every_earlier_state_rebuild_the_current_state(
        client: AsyncTestClient, ops: list[str], seed: int) -> None:  # type: ignore[type-arg]
    model = Model(client, random.Random(seed))
    await model.observe()
    for op in ops:
        await model.step(op)
        await model.observe()
    await check(model)


async def test_states_survive_a_restart(make_config: Callable[..., ApplianceConfig],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = jmap_config(make_config, monkeypatch)
    async with AsyncTestClient(app=create_app(config)) as first:
        before = await snapshot(first, "Email")
        one = await deliver(first, message(subject="one"))
        middle = await snapshot(first, "Email")
    async with AsyncTestClient(app=create_app(config)) as second:
        assert await snapshot(second, "Email") == middle  # nothing moved on by itself
        two = await deliver(second, message(subject="two"))
        _, answer = await call(second, "Email/changes", {"sinceState": before[0]})
        assert answer["created"] == [one, two]
        _, answer = await call(second, "Email/changes", {"sinceState": middle[0]})
        assert answer["created"] == [two] and answer["newState"] != middle[0]
        assert int(answer["newState"].split("-")[0]) > int(middle[0].split("-")[0])


async def test_past_retention_changes_cannot_be_calculated(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    old = (await snapshot(client, "Email"))[0]
    await deliver(client, message())
    await snapshot(client, "Email")  # indexed: its changes are logged
    runtime = runtime_of(client)
    await runtime.db.write(lambda con: prune(con, utc(), keep=__import__("datetime").timedelta(0)))
    name, answer = await call(client, "Email/changes", {"sinceState": old})
    assert (name, answer["type"]) == ("error", "cannotCalculateChanges")
    now = (await snapshot(client, "Email"))[0]
    _, answer = await call(client, "Email/changes", {"sinceState": now})
    assert answer["created"] == [] and answer["newState"] == now
    for bogus in ("garbage", now.split("-")[0] + "-otherepoch", "999999-" + now.split("-")[1]):
        _, answer = await call(client, "Email/changes", {"sinceState": bogus})
        assert answer["type"] == "cannotCalculateChanges", bogus
    _, answer = await call(client, "Email/queryChanges", {"sinceQueryState": old})
    assert answer["type"] == "cannotCalculateChanges"


async def test_the_reception_hook_and_the_fallback(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """Mail stored with record_created is in the same transaction's state; mail stored without is found anyway."""
    runtime = runtime_of(client)
    state = (await snapshot(client, "Email"))[0]
    raw = message(subject="hooked")

    def stored(email_id: str) -> StoredMessage:
        return StoredMessage(email_id=email_id, agent=AGENT, mailbox="inbox", thread_id="T" + email_id[1:17],
                             message_id=None, subject="hooked", sender="alice@example.net", received_at=utc(),
                             decision_id="d" + email_id[1:], size=len(raw), keywords=[], raw=raw)

    def hooked(batch: Batch) -> None:
        save_message(batch, stored("ehooked0000000000000000000001"))
        record_created(batch, AGENT, "Email", "ehooked0000000000000000000001")

    await runtime.db.write_batch(hooked)
    _, answer = await call(client, "Email/changes", {"sinceState": state})
    assert answer["created"] == ["ehooked0000000000000000000001"]  # at once
    await runtime.db.write_batch(lambda batch: save_message(batch, stored("eplain00000000000000000000001")))
    for _ in range(40):  # without the hook: the push loop's look at the store finds it within its poll
        _, answer = await call(client, "Email/changes", {"sinceState": state})
        if len(answer["created"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(answer["created"]) == ["ehooked0000000000000000000001", "eplain00000000000000000000001"]
    state = answer["newState"]

    def both(batch: Batch) -> None:  # a hooked and an unhooked message between two looks: neither is missed
        save_message(batch, stored("ehooked0000000000000000000002"))
        record_created(batch, AGENT, "Email", "ehooked0000000000000000000002")
        save_message(batch, stored("eplain00000000000000000000002"))

    await runtime.db.write_batch(both)
    _, answer = await call(client, "Email/changes", {"sinceState": state})
    assert sorted(answer["created"]) == ["ehooked0000000000000000000002", "eplain00000000000000000000002"]
    held = await deliver(client, message("mallory@held.example"), sender="mallory@held.example")
    state = answer["newState"]
    release = await client.post(f"/api/v1/quarantine/{held}/release", headers=ADMIN)
    assert release.status_code == 200
    for _ in range(40):
        _, answer = await call(client, "Email/changes", {"sinceState": state})
        if answer["created"]:
            break
        await asyncio.sleep(0.05)
    assert answer["created"] == [held]  # released: the agent's now


async def test_max_changes_and_intermediate_states(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    state = (await snapshot(client, "Email"))[0]
    ids = [await deliver(client, message(subject=str(i))) for i in range(5)]
    seen: list[str] = []
    for _ in range(5):
        _, answer = await call(client, "Email/changes", {"sinceState": state, "maxChanges": 2})
        assert len(answer["created"]) <= 2, answer
        seen += answer["created"]
        state = answer["newState"]
        if not answer["hasMoreChanges"]:
            break
    assert seen == ids
    _, answer = await call(client, "Email/changes", {"sinceState": state, "maxChanges": 0})
    assert answer["type"] == "invalidArguments"


async def test_concurrent_writers_get_distinct_states(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    ids = [await deliver(client, message(subject=str(i))) for i in range(6)]
    answers = await asyncio.gather(*(call(client, "Email/set", {"update": {i: {"keywords/$seen": True}}})
                                     for i in ids))
    states = [a[1]["newState"] for a in answers]
    assert len(set(states)) == len(states)
    body = await jmap(client, [["Email/get", {"accountId": answers[0][1]["accountId"], "ids": ids,
                                              "properties": ["keywords"]}, "g"]])
    assert all(e["keywords"] == {"$seen": True} for e in body["methodResponses"][0][1]["list"])
