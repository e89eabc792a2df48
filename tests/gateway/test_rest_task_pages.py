"""`GET /api/v2/tasks` in pages (`page_token` in, `next_page_token` out), its lists and totals
from one ListTasks read with `page_per_kind`; and that read's `kind_totals` over gRPC.
Against the real server and gateway, with tasks of both kinds held in the queue."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tandem.v1 import task_pb2, task_service_pb2
from tests.conftest import Stubs
from tests.gateway.conftest import Model, Rest

HELD = 2  # queued tasks of each kind, so that every kind spans several pages of one


@pytest.fixture
def queued(rest: Rest, colour_model: Model) -> Iterator[list[str]]:
    """Ids of HELD queued tasks of each kind (CPU limits at 0 meanwhile), cancelled after."""
    before = rest.get("/api/v2/resources").json()["max_concurrent"]["cpu"]
    hold = {"max_concurrent": {"cpu": {"training": 0, "inference": 0}}}
    assert rest.post("/api/v2/resources/config", json=hold).ok
    train = {"model": "resnet18", "dataset": "synthetic", "image_size": 32, "device": "cpu"}
    infer = {"task_id": colour_model.task_id, "dataset": colour_model.dataset, "device": "cpu"}
    ids: list[str] = []
    try:
        for _ in range(HELD):
            for path, body in (("/api/v2/train", train), ("/api/v2/inference", infer)):
                response = rest.post(path, json=body)
                assert response.status_code == 200, response.text
                ids.append(response.json()["task_id"])
        yield ids
    finally:
        for task_id in ids:
            rest.post(f"/api/v2/tasks/{task_id}/cancel")
        assert rest.post("/api/v2/resources/config", json={"max_concurrent": {"cpu": before}}).ok


def _every_page(rest: Rest, **params: Any) -> list[dict[str, Any]]:
    pages = [rest.get("/api/v2/tasks", params=params).json()]
    while pages[-1]["next_page_token"]:
        token = pages[-1]["next_page_token"]
        response = rest.get("/api/v2/tasks", params={**params, "page_token": token})
        assert response.status_code == 200, response.text
        pages.append(response.json())
        assert len(pages) <= 1000, "the pages never end"
    return pages


def test_paging_by_one_visits_every_task_once_per_kind(rest: Rest, queued: list[str]) -> None:
    pages = _every_page(rest, limit=1)
    whole = rest.get("/api/v2/tasks", params={"limit": 1000}).json()
    assert whole["next_page_token"] == ""
    for kind, field, total in (
        ("training", "training_tasks", "total_training"),
        ("inference", "inference_tasks", "total_inference"),
    ):
        assert all(len(page[field]) <= 1 for page in pages)
        visited = [t["task_id"] for page in pages for t in page[field]]
        # Once each, newest first, as one page with room for all lists them.
        assert visited == [t["task_id"] for t in whole[field]]
        assert len(set(visited)) == len(visited) == whole[total] >= HELD
        assert {page[total] for page in pages} == {whole[total]}
        assert all(t["kind"] == kind for page in pages for t in page[field])
    # As many pages as the longer kind needs: no empty page at the end.
    assert len(pages) == max(whole["total_training"], whole["total_inference"])
    assert set(queued) <= {t["task_id"] for t in whole["training_tasks"] + whole["inference_tasks"]}


def test_paging_keeps_the_state_filter(rest: Rest, queued: list[str]) -> None:
    pages = _every_page(rest, limit=1, state="queued")
    listed = [t for page in pages for t in page["training_tasks"] + page["inference_tasks"]]
    assert {t["state"] for t in listed} == {"QUEUED"}
    assert set(queued) <= {t["task_id"] for t in listed}
    assert len(listed) == pages[0]["total_training"] + pages[0]["total_inference"]


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("token", "sentence"),
    [
        ("garbage", "was not issued by this server"),
        (_token("kinds:training=1,inference=" + "9" * 40), "was not issued by this server"),
        # A gRPC page of all kinds together does not continue a page per kind.
        (_token("id:5"), "continues a list of all kinds together"),
    ],
)
def test_a_forged_page_token_is_a_400_with_a_sentence(
    rest: Rest, token: str, sentence: str
) -> None:
    response = rest.get("/api/v2/tasks", params={"page_token": token})
    assert response.status_code == 400, response.text
    assert sentence in response.json()["detail"]
    assert "page_token" in response.json()["detail"]


@pytest.fixture
def stubs_of_rest(rest: Rest) -> Iterator[Stubs]:
    assert rest.server is not None
    stubs = Stubs.connect(rest.server.port)
    yield stubs
    stubs.channel.close()


KINDS = (task_pb2.TASK_KIND_TRAINING, task_pb2.TASK_KIND_INFERENCE)


@pytest.mark.parametrize(
    "states",
    # Filters whose counts nothing changes meanwhile: no CPU task is admitted while held.
    [[], [task_pb2.TASK_STATE_QUEUED], [task_pb2.TASK_STATE_PREEMPTED]],
)
def test_kind_totals_agree_with_the_totals_of_one_kind(
    stubs_of_rest: Stubs, queued: list[str], states: list[task_pb2.TaskState]
) -> None:
    ListTasks = stubs_of_rest.tasks.ListTasks
    Request = task_service_pb2.ListTasksRequest
    page = ListTasks(Request(states=states, page_size=1, page_per_kind=True))
    totals = [(t.kind, t.total_size) for t in page.kind_totals]
    assert totals == [
        (kind, ListTasks(Request(states=states, kind=kind)).total_size) for kind in KINDS
    ]
    assert page.total_size == sum(n for _, n in totals)
    if states == [task_pb2.TASK_STATE_QUEUED]:
        assert all(n >= HELD for _, n in totals)
    # Every answer carries them: a list of all kinds together, and a list of one kind.
    assert ListTasks(Request(states=states)).kind_totals == page.kind_totals
    one = ListTasks(Request(states=states, kind=task_pb2.TASK_KIND_INFERENCE, page_per_kind=True))
    assert [(t.kind, t.total_size) for t in one.kind_totals] == totals[1:]


def test_a_token_of_one_shape_of_list_is_refused_by_the_other(
    stubs_of_rest: Stubs, queued: list[str]
) -> None:
    Request = task_service_pb2.ListTasksRequest
    per_kind = stubs_of_rest.tasks.ListTasks(Request(page_size=1, page_per_kind=True))
    plain = stubs_of_rest.tasks.ListTasks(Request(page_size=1))
    assert per_kind.next_page_token and plain.next_page_token
    for request, sentence in (
        (Request(page_token=per_kind.next_page_token), "ask with page_per_kind"),
        (Request(page_token=plain.next_page_token, page_per_kind=True), "ask without"),
        (
            Request(
                page_token=per_kind.next_page_token,
                kind=task_pb2.TASK_KIND_TRAINING,
                page_per_kind=True,
            ),
            "continues a list of other kinds",
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stubs_of_rest.tasks.ListTasks(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert sentence in info.value.details()
