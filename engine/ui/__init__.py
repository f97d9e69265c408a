"""The Temporal++ web UI: see and operate workflows in a browser (``tpp ui``).

A Starlette app with Jinja2 templates rendered on the server, and one small
vendored front-end library (htmx, for the self-refreshing parts and payloads
loaded on demand); no build step.  It needs the ``ui`` extra
(``pip install -e ".[ui]"``: starlette, jinja2, uvicorn, python-multipart).

>>> from starlette.testclient import TestClient
>>> from stores import MemoryStore
>>> from engine import Client
>>> store = MemoryStore()
>>> wid = Client(store).start("send_invoice", "cust-1", id="invoice/2026 11")
>>> page = TestClient(create_app(store), base_url="http://localhost").get("/")
>>> page.status_code, "invoice/2026 11" in page.text
(200, True)
"""

from ._app import create_app

__all__ = ["create_app"]
