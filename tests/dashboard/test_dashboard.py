"""The dashboard in a real headless Chromium against a real server and gateway: what the
overview, task, limits and auth pages show and do, checked against the API behind them.
Every wait is on a condition in the page, never on time."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Request, expect

from tandem.v1 import resource_service_pb2
from tests.conftest import Stubs
from tests.dashboard.conftest import (
    CHROMIUM,
    MODEL_NAME,
    NO_CHROMIUM,
    DroppingRelay,
    Scenario,
    Tab,
    log_history,
)
from tests.gateway.conftest import start_rest, stop_rest

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)


def series(chart: str, name: str) -> str:
    return f'#{chart} g.series[data-name="{name}"]'


def points(tab: Tab, chart: str, name: str) -> int:
    found = tab.page.locator(series(chart, name)).get_attribute("data-points")
    return int(found or 0)


def test_overview_shows_the_running_task_on_its_device_and_the_queued_one_with_its_reason(
    scenario: Scenario, tab: Tab
) -> None:
    tab.page.goto(scenario.rest.url + "/")
    cpu = tab.page.locator('article.device[data-device="cpu"]')
    expect(cpu.locator(f'li[data-task="{scenario.running}"]')).to_be_visible()
    expect(cpu.locator(".slots").first).to_contain_text("1 / 1 in use")

    reason = scenario.rest.get(f"/api/v1/tasks/{scenario.queued}").json()["waiting_reason"]
    assert reason == "1 of 1 cpu training slots busy"
    queued_row = tab.page.locator(f'#queue tr[data-task="{scenario.queued}"]')
    expect(queued_row.locator("td.reason")).to_have_text(reason)
    expect(queued_row).to_contain_text("#1")

    # Live: a task submitted now shows up in the queue without reloading the page.
    tab.page.evaluate("window.notReloaded = true")
    later = scenario.train(epochs=1, priority=9)
    expect(tab.page.locator(f'#queue tr[data-task="{later}"]')).to_be_visible()
    assert tab.page.evaluate("window.notReloaded") is True
    tab.screenshot("overview-live")
    assert scenario.rest.post(f"/api/v2/tasks/{later}/cancel").status_code == 200
    assert tab.console.errors == []


def test_training_curves_gain_a_point_when_an_epoch_ends(scenario: Scenario, tab: Tab) -> None:
    # The history first: the page catches up with every epoch the server has logged...
    logged = sum(1 for e in log_history(scenario.rest, scenario.running) if _epoch_end(e))
    tab.page.goto(f"{scenario.rest.url}/#/task/{scenario.running}")
    loss = tab.page.locator(series("chart-loss", "loss"))
    tab.page.wait_for_function(
        "([selector, n]) => +(document.querySelector(selector)?.dataset.points ?? -1) >= n",
        arg=[series("chart-loss", "loss"), max(logged, 1)],
    )
    # ...then the epoch under way ends while the page watches.
    before = points(tab, "chart-loss", "loss")
    last_epoch = int(loss.get_attribute("data-last-x") or 0)
    steps_before = points(tab, "chart-steps", "step_loss")
    tab.page.wait_for_function(
        "([selector, n]) => +document.querySelector(selector).dataset.points > n",
        arg=[series("chart-loss", "loss"), before],
    )
    epoch = int(loss.get_attribute("data-last-x") or 0)
    assert epoch > last_epoch
    ended = [e for e in log_history(scenario.rest, scenario.running) if _epoch_end(e)]
    assert epoch in {int(e["metrics"]["epoch"]) for e in ended}  # as the server logged it
    assert points(tab, "chart-accuracy", "val_accuracy") >= before + 1
    # The step curve grows too. Waited for, not read: the epoch's last step may have been
    # drawn just before `steps_before` was read, and the next comes with the next batch.
    tab.page.wait_for_function(
        "([selector, n]) => +document.querySelector(selector).dataset.points > n",
        arg=[series("chart-steps", "step_loss"), steps_before],
    )
    tab.screenshot("task-running")
    assert tab.console.errors == []


def _epoch_end(event: dict[str, object]) -> bool:
    metrics = event.get("metrics") or {}
    assert isinstance(metrics, dict)
    return event["type"] == "metrics" and "epoch" in metrics and "batch" not in metrics


def test_log_view_resumes_without_gaps_after_the_connection_drops(
    scenario: Scenario, tab: Tab, relay: DroppingRelay
) -> None:
    log_requests: list[Request] = []
    path = f"/tasks/{scenario.running}/logs"
    tab.page.on("request", lambda r: log_requests.append(r) if path in r.url else None)
    tab.page.goto(f"{relay.url}/#/task/{scenario.running}")
    status = tab.page.locator("#log-status")
    expect(status).to_have_attribute("data-status", "live")
    expect(tab.page.locator("#log li").first).to_be_attached()

    relay.drop()
    # The page notices, reconnects on its own and asks for what follows its last line.
    expect(status).to_have_attribute("data-reconnects", re.compile(r"^[1-9]"))
    expect(status).to_have_attribute("data-status", "live")
    resumes = [r.all_headers().get("last-event-id") for r in log_requests[1:]]
    assert log_requests[0].all_headers().get("last-event-id") is None
    assert resumes and all(resumes), resumes
    last_before = int(resumes[0] or 0)
    tab.page.wait_for_function(
        "seq => [...document.querySelectorAll('#log li')].some(li => +li.dataset.seq > seq)",
        arg=last_before,
    )
    shown = [
        int(s)
        for s in tab.page.locator("#log li").evaluate_all(
            "items => items.map(li => li.dataset.seq)"
        )
    ]
    assert shown == list(range(1, len(shown) + 1))  # every event once, none missing
    assert shown[-1] > last_before


def test_tasks_table_filters_by_state_and_kind(scenario: Scenario, tab: Tab) -> None:
    tab.page.goto(f"{scenario.rest.url}/#/tasks?state=running&kind=training")
    rows = tab.page.locator("#tasks tbody tr")
    expect(rows.first).to_have_attribute("data-task", scenario.running)
    assert rows.count() == 1

    # Chosen in the form: every kind, queued; the address follows.
    tab.page.get_by_label("State").select_option("queued")
    tab.page.get_by_label("Kind").select_option("")
    tab.page.get_by_role("button", name="Show").click()
    expect(tab.page).to_have_url(re.compile(r"#/tasks\?state=queued$"))
    expect(tab.page.locator(f'#tasks tr[data-task="{scenario.queued}"]')).to_be_visible()
    states = rows.evaluate_all("rows => rows.map(row => row.dataset.state)")
    assert set(states) == {"QUEUED"}
    assert tab.console.errors == []


def test_cancel_from_the_page_cancels_the_task(scenario: Scenario, tab: Tab) -> None:
    waiting = scenario.train(epochs=1)
    tab.page.goto(f"{scenario.rest.url}/#/task/{waiting}")
    header = tab.page.locator(".task-header")
    expect(header.locator(".badge")).to_have_text("QUEUED")
    tab.page.get_by_role("button", name="Cancel task…").click()
    tab.page.get_by_role("button", name="Yes, cancel it").click()
    expect(header.locator(".badge")).to_have_text("CANCELLED")
    assert scenario.rest.get(f"/api/v1/tasks/{waiting}").json()["state"] == "CANCELLED"
    expect(tab.page.locator('#timeline li[data-state="CANCELLED"]')).to_be_visible()
    assert tab.console.errors == []


def test_a_limit_changed_on_the_page_is_what_get_resources_returns(
    scenario: Scenario, tab: Tab
) -> None:
    assert scenario.rest.server is not None
    stubs = Stubs.connect(scenario.rest.server.port)
    tab.page.goto(f"{scenario.rest.url}/#/limits")
    form = tab.page.locator('form.limits[data-device="cpu"]')
    form.get_by_label("Inference at once").fill("3")
    form.get_by_role("button", name="Save cpu").click()
    expect(form.locator(".notice.ok")).to_contain_text("at most 1 training and 3 inference")
    limits = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert (limits.max_concurrent["cpu"].training, limits.max_concurrent["cpu"].inference) == (1, 3)

    # A value the server refuses: the page shows the server's own sentence.
    form.get_by_label("Training at once").fill("9999")
    form.get_by_role("button", name="Save cpu").click()
    body = {"max_concurrent": {"cpu": {"training": 9999, "inference": 3}}}
    refusal = scenario.rest.post("/api/v2/resources/config", json=body)
    assert refusal.status_code == 422
    expect(form.get_by_role("alert")).to_have_text(f"Not changed: {refusal.json()['detail']}")
    tab.screenshot("limits-refused")
    limits = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert limits.max_concurrent["cpu"].training == 1
    stubs.channel.close()
    # The refusal's 422 is the one error the console may show.
    assert [e for e in tab.console.errors if "422" not in e] == []


def test_with_a_token_the_page_shows_nothing_until_it_is_given(
    open_tab: Callable[..., Tab],
) -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-auth-") as tmp:
        rest = start_rest(Path(tmp), auth_token="s3cret-dashboard", prewarm_workers=0)
        try:
            tab = open_tab()
            page = tab.page
            page.goto(rest.url + "/")
            expect(page.get_by_label("This server needs an access token")).to_be_visible()
            assert page.locator("#app").is_hidden()
            assert page.locator("main").inner_html() == ""
            tab.screenshot("auth-prompt")

            page.get_by_label("This server needs an access token").fill("wrong")
            page.get_by_role("button", name="Open the dashboard").click()
            expect(page.locator("#auth-message")).to_have_text("The server refused that token.")
            assert page.locator("#app").is_hidden()

            page.get_by_label("This server needs an access token").fill("s3cret-dashboard")
            page.get_by_role("button", name="Open the dashboard").click()
            expect(page.locator('article.device[data-device="cpu"]')).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('tandem.token')") == "s3cret-dashboard"
            assert page.evaluate("document.cookie") == ""
            assert "s3cret" not in page.url

            # Kept for the tab: a reload asks nothing; another tab asks again.
            page.reload()
            expect(page.locator('article.device[data-device="cpu"]')).to_be_visible()
            other = page.context.new_page()
            other.goto(rest.url + "/")
            expect(other.get_by_label("This server needs an access token")).to_be_visible()
            assert other.locator("#app").is_hidden()
        finally:
            stop_rest(rest)


def test_every_page_renders_without_console_errors(
    scenario: Scenario, open_tab: Callable[..., Tab]
) -> None:
    url = scenario.rest.url
    pages = [
        ("overview", "/#/", f'#queue tr[data-task="{scenario.queued}"]'),
        ("tasks", "/#/tasks", f'#tasks tr[data-task="{scenario.finished}"]'),
        (
            "tasks-succeeded-training",
            "/#/tasks?state=succeeded&kind=training",
            f'#tasks tr[data-task="{scenario.finished}"]',
        ),
        ("task-finished", f"/#/task/{scenario.finished}", '#log-status[data-status="ended"]'),
        ("task-queued", f"/#/task/{scenario.queued}", "#task-summary"),
        (
            "compare",
            f"/#/compare?ids={scenario.finished},{scenario.running}",
            '#compare-loss g.series[data-points="2"]',
        ),
        ("limits", "/#/limits", 'form.limits[data-device="cpu"]'),
        ("models", "/#/models", f'#models tr[data-model="{MODEL_NAME}"]'),
        ("model", f"/#/models/{MODEL_NAME}", '#model-versions tr[data-version="1"]'),
    ]
    for scheme in ("light", "dark"):
        tab = open_tab(scheme)
        for name, path, ready in pages:
            tab.page.goto(url + path)
            expect(tab.page.locator(ready).first).to_be_visible()
            tab.screenshot(f"{name}-{scheme}" if scheme == "dark" else name)
        assert tab.console.errors == [], scheme
