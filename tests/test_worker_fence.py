"""streams.worker.fence: a worker out of its group sends no changelog records (the SIGSTOP scenario
end to end: tests/test_integration_failover.py)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from aiokafka.protocol.produce import ProduceRequest

from streams.worker.fence import (
    EXIT_CODE,
    Membership,
    assignment_recorded,
    fenced,
    heartbeat_recorded,
    reset_recorded,
    writes_state,
)


def produce(*topics: str) -> ProduceRequest:
    return ProduceRequest(None, -1, 30000, [(topic, [(0, b"records")]) for topic in topics])


class Exited(Exception):
    pass


def exit_():
    raise Exited()


def recording_send():
    sent = []

    async def send(client, node_id, request, **kwargs):
        sent.append(request)
        return "response"
    return send, sent


def test_only_requests_with_changelog_records_write_state():
    assert writes_state(produce("recstream-affinity-changelog"))
    assert writes_state(produce("recstream.recommendations", "recstream-fans-changelog"))
    assert not writes_state(produce("recstream.recommendations", "recstream.signals.keyed"))
    assert not writes_state(SimpleNamespace())  # not a produce request


def test_writes_leave_at_once_before_any_answer_and_while_the_group_answers():
    membership = Membership(window_s=3.0)
    send, sent = recording_send()
    fenced_send = fenced(send, membership, exit_=exit_)
    request = produce("app-affinity-changelog")
    assert asyncio.run(fenced_send(None, 1, request)) == "response"  # no answer yet: nothing owned
    membership.confirm("m-1", time.monotonic() - 2.0)
    assert asyncio.run(fenced_send(None, 1, request)) == "response"
    assert sent == [request, request]


def test_a_write_after_a_silence_is_held_until_the_group_answers_for_the_same_member():
    membership = Membership(window_s=3.0)
    membership.confirm("m-1", time.monotonic() - 14.0)  # a freeze: the last answer 14 s ago
    send, sent = recording_send()

    async def scenario():
        task = asyncio.create_task(fenced(send, membership, exit_=exit_)(None, 1, produce("app-fans-changelog")))
        await asyncio.sleep(0.1)
        held = (sent == [], task.done())
        membership.confirm("m-1", time.monotonic())  # a heartbeat answered: a stall within the session
        await asyncio.wait_for(task, 2)
        return held, len(sent)

    assert asyncio.run(scenario()) == ((True, False), 1)


@pytest.mark.parametrize("answer", ["lost", "new member"])
def test_a_held_write_never_leaves_once_the_group_no_longer_knows_the_member(answer):
    membership = Membership(window_s=3.0)
    membership.confirm("m-1", time.monotonic() - 14.0)
    send, sent = recording_send()

    async def scenario():
        task = asyncio.create_task(fenced(send, membership, exit_=exit_)(None, 1, produce("app-fans-changelog")))
        await asyncio.sleep(0.1)
        if answer == "lost":
            membership.lost()  # a heartbeat answered "unknown member"
        else:
            membership.confirm("m-2", time.monotonic())  # rejoined: the partitions may be another's
        with pytest.raises(Exited):
            await asyncio.wait_for(task, 2)

    asyncio.run(scenario())
    assert sent == []


def test_a_fenced_exit_notes_the_stores_with_writes_never_acknowledged(monkeypatch, tmp_path):
    from streams.worker import fence, stopping
    from streams.worker.local_state import drop_unsent

    codes = []
    monkeypatch.setattr(stopping.os, "_exit", lambda code: codes.append(code))
    monkeypatch.setattr(fence, "tabledir", tmp_path)
    monkeypatch.setattr(fence, "unsent", fence.Unsent())
    (tmp_path / "affinity-2.db").mkdir()
    (tmp_path / "affinity-3.db").mkdir()
    fence.unsent.stored({("app-affinity-changelog", 2): [(b"u1", b"p")]})
    fence.fenced_exit()
    assert codes == [EXIT_CODE]
    assert drop_unsent(tmp_path, {"affinity": "app-affinity-changelog"}, lambda line: None) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["affinity-3.db"]


def test_outputs_without_changelog_records_are_never_held():
    membership = Membership(window_s=3.0)
    membership.confirm("m-1", time.monotonic() - 14.0)
    membership.lost()
    send, sent = recording_send()
    asyncio.run(fenced(send, membership, exit_=exit_)(None, 1, produce("app.recommendations")))
    assert len(sent) == 1


def test_a_heartbeat_confirms_the_member_as_of_its_sending_and_only_for_the_group():
    membership = Membership(window_s=3.0)

    async def heartbeat(coordinator):
        await asyncio.sleep(0.2)  # the answer comes later: it proves nothing about the time after the sending
        return coordinator.answer

    record = heartbeat_recorded(heartbeat, "app", membership)
    before = time.monotonic()
    assert asyncio.run(record(SimpleNamespace(group_id="app", member_id="m-1", answer=True)))
    assert membership.member_id == "m-1" and before <= membership.confirmed_at < before + 0.1
    asyncio.run(record(SimpleNamespace(group_id="app-direct", member_id="x", answer=True)))
    asyncio.run(record(SimpleNamespace(group_id="app", member_id="m-1", answer=False)))
    assert membership.member_id == "m-1" and membership.confirmed_at < before + 0.1


def test_an_assignment_confirms_its_member_and_a_reset_loses_only_the_recorded_member():
    membership = Membership(window_s=3.0)
    calls = []

    async def join_complete(coordinator, *args):
        calls.append(args)

    def reset(coordinator):
        calls.append("reset")

    asyncio.run(assignment_recorded(join_complete, "app", membership)(SimpleNamespace(group_id="app"), 3, "m-1",
                                                                      "faust", b""))
    assert membership.member_id == "m-1" and calls == [(3, "m-1", "faust", b"")]
    reset_generation = reset_recorded(reset, "app", membership)
    reset_generation(SimpleNamespace(group_id="app", member_id=""))  # a passing client of the group closing
    assert membership.member_id == "m-1"
    reset_generation(SimpleNamespace(group_id="app", member_id="m-1"))
    assert membership.member_id is None and calls[-2:] == ["reset", "reset"]
