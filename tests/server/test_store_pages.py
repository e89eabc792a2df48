"""`TaskStore.page` on a real SQLite file: a page per kind visits every task of each kind
once, newest first, with the totals of the filter; page tokens are checked, and a token
of one shape of list is refused by the other with a sentence that says so."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.page_tokens import BadPageToken
from server.records import TaskKind, TaskRecord, TaskState
from server.store import TaskPage, TaskStore

TRAINING, INFERENCE = TaskKind.TRAINING, TaskKind.INFERENCE
# Submit order: 5 training and 3 inference tasks, interleaved, every other one succeeded.
KINDS = [TRAINING, INFERENCE, TRAINING, TRAINING, INFERENCE, TRAINING, INFERENCE, TRAINING]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    store = TaskStore(tmp_path / "tandem.db")
    for n, kind in enumerate(KINDS):
        state = TaskState.SUCCEEDED if n % 2 else TaskState.QUEUED
        store.insert(TaskRecord(f"t{n}", kind, state, 5, "cpu", {}, create_time=float(n)))
    yield store
    store.close()


def _ids(kind: TaskKind, states: tuple[TaskState, ...] = ()) -> list[str]:
    """Task ids of `kind` in `states`, newest first, as the fixture made them."""
    return [
        f"t{n}"
        for n, k in reversed(list(enumerate(KINDS)))
        if k is kind
        and (not states or (TaskState.SUCCEEDED if n % 2 else TaskState.QUEUED) in states)
    ]


def _all_pages(
    store: TaskStore, *, page_size: int, kind: TaskKind | None = None, per_kind: bool = False
) -> list[TaskPage]:
    pages: list[TaskPage] = []
    token = ""
    while not pages or token:
        pages.append(
            store.page(kind=kind, page_size=page_size, page_token=token, per_kind=per_kind)
        )
        token = pages[-1].next_page_token
        assert len(pages) <= len(KINDS), "the pages never end"
    return pages


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 100])
def test_a_page_per_kind_visits_each_task_once_and_newest_first(
    store: TaskStore, page_size: int
) -> None:
    pages = _all_pages(store, page_size=page_size, per_kind=True)
    for kind in TaskKind:
        each = [[t.task_id for t in page.tasks if t.kind is kind] for page in pages]
        assert all(len(ids) <= page_size for ids in each)
        assert [i for ids in each for i in ids] == _ids(kind)
    # Pages are as many as the longest kind needs; every page carries the same totals.
    assert len(pages) == -(-5 // page_size)
    assert all(page.totals == {TRAINING: 5, INFERENCE: 3} for page in pages)
    for page in pages:
        times = [t.create_time for t in page.tasks]
        assert times == sorted(times, reverse=True)


def test_totals_count_the_filter_and_one_kind_pages_alone(store: TaskStore) -> None:
    done = (TaskState.SUCCEEDED,)
    page = store.page(states=done, page_size=1, per_kind=True)
    assert page.totals == {
        TRAINING: len(_ids(TRAINING, done)),
        INFERENCE: len(_ids(INFERENCE, done)),
    }
    assert [t.task_id for t in page.tasks] == sorted(
        [_ids(TRAINING, done)[0], _ids(INFERENCE, done)[0]], key=lambda i: -int(i[1:])
    )

    pages = _all_pages(store, kind=INFERENCE, page_size=2, per_kind=True)
    assert [t.task_id for p in pages for t in p.tasks] == _ids(INFERENCE)
    assert all(p.totals == {INFERENCE: 3} for p in pages)

    # A list of all kinds together: `page_size` counts them all; totals still per kind.
    plain = _all_pages(store, page_size=3)
    assert [len(p.tasks) for p in plain] == [3, 3, 2]
    assert [t.task_id for p in plain for t in p.tasks] == [f"t{n}" for n in reversed(range(8))]
    assert plain[0].totals == {TRAINING: 5, INFERENCE: 3}


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_a_token_continues_only_its_own_shape_of_list(store: TaskStore) -> None:
    per_kind = store.page(page_size=1, per_kind=True).next_page_token
    plain = store.page(page_size=1).next_page_token
    training_only = store.page(kind=TRAINING, page_size=1, per_kind=True).next_page_token

    with pytest.raises(BadPageToken, match="continues a list paged per kind; ask with"):
        store.page(page_token=per_kind)
    with pytest.raises(BadPageToken, match="continues a list of all kinds together"):
        store.page(page_token=plain, per_kind=True)
    with pytest.raises(BadPageToken, match="continues a list of other kinds"):
        store.page(page_token=training_only, per_kind=True)
    with pytest.raises(BadPageToken, match="continues a list of other kinds"):
        store.page(kind=INFERENCE, page_token=training_only, per_kind=True)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "====",
        _token("kinds:"),
        _token("kinds:training=1"),  # a kind missing is another list: refused below
        _token("kinds:training=1,inference=-1"),
        _token("kinds:training=1,inference=1_0"),
        _token(f"kinds:training=1,inference={2**63}"),
        _token("kinds:training=1,inference=" + "9" * 5000),
        _token("kinds:training=1,training=2"),
        _token("kinds:training=1,predict=2"),
        _token("kinds:training=1,inference=2,"),
        _token("kinds:training=1;inference=2"),
        _token("kinds:training=٣,inference=2"),
        _token("nope:1"),
    ],
)
def test_a_forged_token_is_refused_with_a_sentence(store: TaskStore, token: str) -> None:
    with pytest.raises(BadPageToken, match=r"page_token .* (was not issued|continues)"):
        store.page(page_token=token, per_kind=True)


def test_a_kind_with_nothing_left_adds_nothing_to_later_pages(store: TaskStore) -> None:
    resumed = store.page(page_token=_token("kinds:training=5,inference=0"), per_kind=True)
    assert [t.task_id for t in resumed.tasks] == ["t3", "t2", "t0"]
    assert resumed.next_page_token == ""
