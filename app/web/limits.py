"""Request-body limits, enforced while the body streams in."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` under `path_prefix`, with the HTML 413 page.

    The 413 is raised from receive(), so it reaches the app's exception handlers (FastAPI's own
    max_body_size answers a declared oversize Content-Length with plain text, whatever they say).
    Chunked bodies are counted as they stream in; nothing past the limit is read.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, path_prefix: str = "/") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise StarletteHTTPException(status_code=413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(status_code=413)
            return message

        await self.app(scope, limited_receive, send)
