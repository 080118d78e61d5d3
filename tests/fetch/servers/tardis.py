"""A loopback tardis.dev datasets endpoint: GET /v1/{exchange}/{type}/{YYYY}/{MM}/{DD}/{SYM}.csv.gz.

Like the real one, days other than the 1st of a month need `Authorization: Bearer <key>`
(answered 401 otherwise); unknown files are 404. The handler checks the header itself.
"""
from __future__ import annotations

import gzip
from datetime import date

from tests.fetch.servers.base import LoopbackServer


class TardisServer(LoopbackServer):
    def __init__(self, api_key: str = "test-key"):
        super().__init__()
        self.api_key = api_key
        self.files: dict[str, bytes] = {}
        self.auth_seen: list[str] = []

    def put(self, exchange: str, data_type: str, day: date, symbol: str, csv_text: str) -> None:
        rel = f"/v1/{exchange}/{data_type}/{day:%Y/%m/%d}/{symbol}.csv.gz"
        self.files[rel] = gzip.compress(csv_text.encode())

    def _handle(self, h, head=False):
        self.auth_seen.append(h.headers.get("Authorization", ""))
        self._auth_ok = h.headers.get("Authorization", "") == f"Bearer {self.api_key}"
        return super()._handle(h, head)

    def route(self, path, q, *, malformed=False):
        parts = path.split("/")
        # /v1/ex/type/YYYY/MM/DD/SYM.csv.gz
        if len(parts) == 8 and parts[6] != "01" and not self._auth_ok:
            return 401, {"Content-Type": "text/plain"}, b"Unauthorized: API key required"
        if path in self.files:
            return 200, {"Content-Type": "application/octet-stream"}, self.files[path]
        return 404, {"Content-Type": "text/plain"}, b"Not found"
