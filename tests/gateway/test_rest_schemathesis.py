"""Schemathesis against the gateway's own `/openapi.json`, over every operation, through real
HTTP to a real gRPC server: no 5xx, and every response matches the documented schema.

It runs schemathesis's engine (what its CLI runs: examples, coverage and fuzzing phases,
every check) in-process. Its pytest plugin is not used: `from_fixture` reaches into a pytest
internal (`Node._nodeid`) that pytest 9 no longer has.

The server behind it runs nothing (limits 0, no workers): tasks the fuzzer manages to
submit stay queued, so every call is cheap and the run stays short.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from tests.gateway.conftest import Rest, start_rest, stop_rest

CONFIG = {
    "seed": 20260105,
    "request-timeout": 20,
    "generation": {"max-examples": 25},
    # Every check but one: a schema-valid body can still name a model or a dataset that
    # does not exist, and the server's 400 for that is right, so "valid data is always
    # accepted" cannot hold for this API.
    "checks": {"positive_data_acceptance": {"enabled": False}},
    "operations": [
        {
            # Nothing runs here, so a followed log never ends: read the history only (the
            # live stream is tested with real tasks in test_rest_v1.py).
            "include-path-regex": "/logs$",
            "parameters": {"query.follow": "false"},
        }
    ],
}


@pytest.fixture(scope="module")
def idle_rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    rest = start_rest(tmp_path_factory.mktemp("fuzz"), prewarm_workers=0)
    nothing = {"cpu": {"training": 0, "inference": 0}}
    assert rest.post("/api/v2/resources/config", json={"max_concurrent": nothing}).ok
    yield rest
    stop_rest(rest)


def _failures(event: events.ScenarioFinished) -> list[str]:
    found = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status is Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                sample = check.failure_info.code_sample
                found.append(
                    f"{event.recorder.label}: {failure.title}: {failure.message}\n{sample}"
                )
    return found or [f"{event.recorder.label}: {event.status.value}"]


def test_every_operation_conforms_and_never_fails(idle_rest: Rest) -> None:
    config = SchemathesisConfig.from_dict(CONFIG)
    schema = schemathesis.openapi.from_url(f"{idle_rest.url}/openapi.json", config=config)
    operations = {op.ok().label for op in schema.get_all_operations()}
    assert len(operations) == 21  # every documented operation, none excluded

    problems: list[str] = []
    tested: set[str] = set()
    finished: events.EngineFinished | None = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested.add(event.recorder.label)
            if event.status in (Status.FAILURE, Status.ERROR):
                problems.extend(_failures(event))
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"{type(event).__name__}: {getattr(event, 'label', '')} {event}")
        elif isinstance(event, events.EngineFinished):
            finished = event
    assert not problems, "\n\n".join(problems)
    assert finished is not None and not finished.failures
    assert tested >= operations
