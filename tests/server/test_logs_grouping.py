"""`Logs` with and without `max_events_per_message`: a client that opts in gets events
that are ready together in one message (`events`); one that does not gets exactly one
event per message in `event`, as before the field existed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tandem.contract import MAX_EVENTS_PER_MESSAGE
from tandem.v1 import task_pb2, task_service_pb2
from tests.conftest import Stubs


def _messages(stubs: Stubs, task_id: str, **fields: Any) -> list[Any]:
    request = task_service_pb2.LogsRequest(task_id=task_id, **fields)
    return list(stubs.tasks.Logs(request, timeout=240))


@pytest.fixture(scope="module")
def ended(stubs: Stubs) -> tuple[str, list[Any]]:
    """A task that has run to its end, and its whole log read the old way."""
    task = stubs.train(epochs=2)
    events = stubs.events(task.task_id)  # follows until the terminal state event
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    return task.task_id, events


def test_an_old_request_gets_one_event_per_message(
    stubs: Stubs, ended: tuple[str, list[Any]]
) -> None:
    task_id, events = ended
    for follow in (True, False):
        messages = _messages(stubs, task_id, follow=follow)
        assert all(m.HasField("event") and not m.events for m in messages)
        assert [m.event for m in messages] == events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_an_ended_log_arrives_grouped(stubs: Stubs, ended: tuple[str, list[Any]]) -> None:
    task_id, events = ended
    messages = _messages(stubs, task_id, max_events_per_message=MAX_EVENTS_PER_MESSAGE)
    assert len(messages) < len(events)
    assert all(not m.HasField("event") and m.events for m in messages)
    assert [e for m in messages for e in m.events] == events

    # At most as many per message as asked, still every event in order.
    messages = _messages(stubs, task_id, from_seq=2, follow=False, max_events_per_message=3)
    assert all(1 <= len(m.events) <= 3 for m in messages)
    assert len(messages) == -(-(len(events) - 1) // 3)
    assert [e for m in messages for e in m.events] == events[1:]


def test_a_live_log_sends_its_history_grouped_then_follows(stubs: Stubs) -> None:
    task = stubs.train(epochs=3)
    stubs.wait_for(task.task_id, lambda event: event.seq >= 3)

    request = task_service_pb2.LogsRequest(
        task_id=task.task_id, max_events_per_message=MAX_EVENTS_PER_MESSAGE
    )
    stream = stubs.tasks.Logs(request, timeout=240)
    first = next(stream)
    assert len(first.events) >= 3  # everything logged so far, in one message
    rest = [e for m in stream for e in m.events]

    events = [*first.events, *rest]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert events == stubs.events(task.task_id)  # the same log as an old client reads


@pytest.mark.parametrize("value", [-1, MAX_EVENTS_PER_MESSAGE + 1])
def test_max_events_per_message_out_of_range_is_invalid(
    stubs: Stubs, ended: tuple[str, list[Any]], value: int
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _messages(stubs, ended[0], max_events_per_message=value)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_events_per_message must be between 0 and 1000" in str(info.value.details())
