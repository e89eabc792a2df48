"""The contract's numbers are held together across layers that cannot import each other,
and the client stays a client: nothing under clients/ imports the server's packages, yet
`tandem serve` is there when the server is installed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scheduler
from server.config import DEFAULTS
from server.gateway.schemas import InferBody, TrainBody
from tandem import contract

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
TANDEM = str(Path(sys.executable).parent / "tandem")


def test_the_scheduler_agrees_on_priorities() -> None:
    # The scheduler imports nothing of Tandem's, so it keeps copies; they must not drift.
    assert (scheduler.MIN_PRIORITY, scheduler.MAX_PRIORITY, scheduler.DEFAULT_PRIORITY) == (
        contract.MIN_PRIORITY,
        contract.MAX_PRIORITY,
        contract.DEFAULT_PRIORITY,
    )
    for priority in (contract.MIN_PRIORITY, contract.DEFAULT_PRIORITY, contract.MAX_PRIORITY):
        assert scheduler.check_priority(priority) == contract.check_priority(priority) == priority
    for priority in (contract.MIN_PRIORITY - 1, contract.MAX_PRIORITY + 1):
        with pytest.raises(ValueError):
            scheduler.check_priority(priority)
        with pytest.raises(contract.OutOfRange):
            contract.check_priority(priority)


def test_every_layer_ends_tasks_in_the_same_states() -> None:
    # The server's records, the wire (client and gateway) and the scheduler-free contract.
    from server.convert import STATE_TO_PB
    from server.gateway.convert import is_terminal
    from server.records import TERMINAL_STATES, TaskState
    from tandem.client import TERMINAL_STATES as WIRE_TERMINAL_STATES

    assert {STATE_TO_PB[s] for s in TERMINAL_STATES} == WIRE_TERMINAL_STATES
    assert {s.value for s in TERMINAL_STATES} == set(contract.TERMINAL_STATE_NAMES)
    assert {s for s in TaskState if is_terminal(STATE_TO_PB[s])} == TERMINAL_STATES
    assert not any(s.terminal for s in (TaskState.QUEUED, TaskState.RUNNING, TaskState.PREEMPTED))


def test_default_limits_are_limits_the_contract_allows() -> None:
    for limits in (scheduler.DEFAULT_GPU_LIMITS, scheduler.DEFAULT_CPU_LIMITS):
        for kind in scheduler.Kind:
            value = limits.of(kind)
            assert contract.check_limit("cpu", kind.value, value) == value
    with pytest.raises(contract.OutOfRange):
        contract.check_limit("cpu", "training", contract.MAX_LIMIT + 1)


def test_the_engines_know_exactly_the_contract_optimizers() -> None:
    from engines.recipe import OPTIMIZERS

    assert sorted(OPTIMIZERS) == sorted(contract.OPTIMIZERS)
    assert contract.DEFAULT_OPTIMIZER in OPTIMIZERS


def test_the_engines_know_exactly_the_contract_recipe_choices() -> None:
    from engines.augment import AUGMENTS
    from engines.recipe import LR_SCHEDULES, resolve_precision

    assert AUGMENTS == contract.AUGMENTS
    assert LR_SCHEDULES == contract.LR_SCHEDULES
    import torch

    for name in contract.PRECISIONS:  # each one resolves on the CPU
        assert resolve_precision(name, torch.device("cpu")).name in contract.PRECISIONS


def test_the_rest_schema_shows_the_contract_bounds() -> None:
    def bounds(schema: dict[str, object], name: str) -> dict[str, object]:
        properties = schema["properties"]
        assert isinstance(properties, dict)
        (number,) = [s for s in properties[name]["anyOf"] if s["type"] != "null"]
        return {k: v for k, v in number.items() if k != "type"}

    train, infer = TrainBody.model_json_schema(), InferBody.model_json_schema()
    priority = {"minimum": contract.MIN_PRIORITY, "maximum": contract.MAX_PRIORITY}
    assert bounds(train, "priority") == bounds(infer, "priority") == priority
    assert bounds(train, "image_size") == {
        "minimum": contract.MIN_IMAGE_SIZE,
        "maximum": contract.MAX_IMAGE_SIZE,
    }
    assert bounds(infer, "top_k") == {"minimum": 1, "maximum": contract.MAX_TOP_K}
    assert train["additionalProperties"] is False


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_nothing_under_clients_imports_the_server_side() -> None:
    sources = sorted(CLIENTS.rglob("*.py"))
    assert any(p.name == "cli.py" for p in sources)
    offenders = {
        str(path.relative_to(CLIENTS)): sorted(found)
        for path in sources
        if (found := _imported_packages(path) & {"server", "scheduler", "engines"})
    }
    assert offenders == {}


def test_tandem_serve_joins_the_cli_with_the_servers_defaults() -> None:
    listed = subprocess.run([TANDEM, "--help"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    commands = [
        line.split()[0] for line in listed.stdout.split("Commands:")[1].splitlines() if line
    ]
    assert "serve" in commands and "train" in commands
    shown = subprocess.run([TANDEM, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert f"default {DEFAULTS.grpc_port};" in text and "env TANDEM_GRPC_PORT" in text
    assert f"default {DEFAULTS.max_waiting};" in text
