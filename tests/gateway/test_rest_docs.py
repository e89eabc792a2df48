"""`/docs` works without internet access: Swagger UI comes from the gateway itself."""

from __future__ import annotations

import requests

from tests.gateway.conftest import Rest


def test_docs_are_served_from_local_files(rest: Rest) -> None:
    page = requests.get(f"{rest.url}/docs", timeout=10)
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    assert "cdn" not in page.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs-assets/{asset}" in page.text
        served = requests.get(f"{rest.url}/docs-assets/{asset}", timeout=10)
        assert served.status_code == 200 and len(served.content) > 10_000
