"""JSON responses encoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """application/json, serialised by orjson (fast on the predict path)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
