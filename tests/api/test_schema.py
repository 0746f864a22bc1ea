"""``/schema`` works offline: its pages load nothing from another host, and what they load is served here."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from litestar.testing import AsyncTestClient

PAGES = ["/schema", "/schema/swagger"]
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", re.I)
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)""", re.I)


def external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme not in ("", "data")


async def test_schema_pages_reference_only_this_host(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    loaded: set[str] = set()
    for page in PAGES:
        response = await client.get(page)
        assert response.status_code == 200, page
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert "SwaggerUIBundle" in html
        references = _REFERENCE.findall(html)
        assert references, page
        assert [r for r in references if external(r)] == [], page
        assert "//" not in re.sub(r"https?://127\.0\.0\.1|https?://localhost", "", "".join(references))
        loaded |= {urljoin(f"http://testserver{page}", r) for r in references}
    for url in sorted(loaded):
        asset = await client.get(urlsplit(url).path)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
        if url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css")
            assert [u for u in _CSS_URL.findall(asset.text) if external(u)] == []
        if url.endswith(".js"):
            assert asset.headers["content-type"].startswith("text/javascript")


async def test_the_openapi_document_is_served_and_redoc_points_at_swagger(
        client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    document = await client.get("/schema/openapi.json")
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "Mail appliance"
    assert "/api/v1/deliveries/{delivery_id}/retry" in document.json()["paths"]
    assert (await client.get("/schema/openapi.yaml")).status_code == 200
    moved = await client.get("/schema/redoc", follow_redirects=False)
    assert moved.status_code in (301, 302, 307, 308)
    assert moved.headers["location"] == "/schema/swagger"


async def test_only_the_viewer_files_are_served(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/schema/assets/index.html")).status_code == 404
    assert (await client.get("/schema/assets/..%2Fswagger-ui.js")).status_code == 404
