"""The dashboard's files as the gateway serves them (no browser needed): the page at `/`
with its security headers, and everything it loads, module by module, from this server
alone. What the page does in a browser is tested in tests/dashboard."""

from __future__ import annotations

import re
from urllib.parse import urljoin

from tests.gateway.conftest import Rest

ASSET = re.compile(r'(?:src|href)="([^"#]+)"')
IMPORT = re.compile(r'^(?:import|export)\b[^"\n]*?from\s+"([^"]+)"|^import\s+"([^"]+)"', re.M)
ANY_URL = re.compile(r"\b[a-z]+://[^\s\"'`)]+")
# An XML namespace is a name, not something fetched.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def test_the_page_and_every_file_it_loads_come_from_the_server_itself(rest: Rest) -> None:
    page = rest.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert set(ANY_URL.findall(page.text)) <= NAMESPACES

    seen: set[str] = set()
    pending = [urljoin("/", path) for path in ASSET.findall(page.text)]
    pending = [path for path in pending if not path.startswith("/docs")]
    assert "/dashboard/js/main.js" in pending
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        assert path.startswith("/dashboard/"), path
        response = rest.get(path)
        assert response.status_code == 200, path
        assert set(ANY_URL.findall(response.text)) <= NAMESPACES, path
        if path.endswith(".js"):
            assert response.headers["content-type"].startswith("text/javascript"), path
            for found in IMPORT.findall(response.text):
                pending.append(urljoin(path, found[0] or found[1]))
    # The modules of every page were reached from main.js.
    for view in ("overview", "tasks", "task", "compare", "limits", "models"):
        assert f"/dashboard/js/views/{view}.js" in seen


def test_the_dashboard_stays_out_of_the_api_document(rest: Rest) -> None:
    paths = rest.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith("/dashboard")]
