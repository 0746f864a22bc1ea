"""``/schema``: the OpenAPI document and Swagger UI, every asset served by the appliance itself.

Litestar's viewers load their JavaScript and CSS from public CDNs, so on an
offline host (the sandbox, an air-gapped server) ``/schema`` is a blank page.
Here Swagger UI's files come from the ``swagger-ui-bundle-v2`` package, under
``/schema/assets/``; the pages name no other host. ``/schema`` and
``/schema/swagger`` are Swagger UI, ``/schema/openapi.json`` and
``/schema/openapi.yaml`` the document. ReDoc and the other CDN viewers are
not offered (``/schema/redoc`` redirects to Swagger UI).
"""

from __future__ import annotations

__all__ = ["ASSET_PATH", "LocalSwaggerRenderPlugin", "openapi_config", "swagger_asset_dir"]

import functools
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from litestar import Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath
from litestar.response import Redirect, Response

SCHEMA_PATH = "/schema"
ASSET_PATH = f"{SCHEMA_PATH}/assets"

_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
"""The files a Swagger UI page loads, and their media types (nothing else of the package is served)."""


@functools.cache
def swagger_asset_dir() -> Traversable:
    """Swagger UI's distribution inside the ``swagger_ui_bundle`` package (its one ``vendor/swagger-ui-*``)."""
    vendor = files("swagger_ui_bundle") / "vendor"
    found = sorted((d for d in vendor.iterdir() if d.name.startswith("swagger-ui-")), key=lambda d: d.name)
    if not found:
        raise RuntimeError(f"no Swagger UI distribution in {vendor}")
    return found[-1]


@functools.cache
def _asset(name: str) -> bytes:
    return (swagger_asset_dir() / name).read_bytes()


@get("/assets/{name:str}", sync_to_thread=False, include_in_schema=False)
def swagger_asset(name: FromPath[str]) -> Response[bytes]:
    """One of Swagger UI's files, from the installed package."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no asset {name}")
    return Response(_asset(name), media_type=media_type, headers={"cache-control": "public, max-age=86400"})


@get("/redoc", sync_to_thread=False, include_in_schema=False)
def redoc_moved() -> Redirect:
    """ReDoc needed a CDN; Swagger UI is served locally instead."""
    return Redirect(f"{SCHEMA_PATH}/swagger")


class LocalSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` and ``/schema/swagger``, its files under ``/schema/assets``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            js_url=f"{ASSET_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSET_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSET_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSET_PATH}/favicon-32x32.png'>",
            path=["/", "/swagger"],
            **kwargs,
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(swagger_asset)
        router.register(redoc_moved)


def openapi_config(*, title: str, version: str) -> OpenAPIConfig:
    """The app's OpenAPI configuration: the document, and a viewer that works offline."""
    return OpenAPIConfig(title=title, version=version, path=SCHEMA_PATH,
                         render_plugins=[LocalSwaggerRenderPlugin(), YamlRenderPlugin()])
