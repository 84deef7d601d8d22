"""What the app's server does with a request before Gradio reads it: refuse an oversized body, fill in left-out inputs.

Both are ASGI middleware, handed to Gradio's FastAPI app as `launch(app_kwargs={"middleware": [...]})` (FastAPI's own
`middleware` argument), so they run before any route parses a body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The largest honest request is two prompts of 2000 characters, each at most 6 bytes as JSON escapes (\uXXXX), and
# a few numbers: under 30 KB. The app takes no files. 1 MiB leaves room for any client, and not for a 200 MB prompt.
MAX_BODY_BYTES = 1 << 20
API_PREFIX = "/gradio_api"  # gradio.route_utils.API_PREFIX, where Gradio's HTTP API lives


class BodyTooLarge(HTTPException):
    """413, raised from the body's `receive` once the bytes received pass the limit."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body over this app's limit of {max_bytes} bytes")


class BodyLimit:
    """Answer 413 to a request whose body is over `max_bytes`, before the app reads it: at once when its
    Content-Length says so, else as soon as the bytes received pass the limit (a chunked body)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self.refuse(scope, receive, send)
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:  # where no exception handler inside turned it into the 413 already
            if not started:
                await self.refuse(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over this app's limit of {self.max_bytes} bytes: send a shorter prompt"
        # Connection: close, so that the server need not read (and the client need not finish sending) the rest.
        await JSONResponse({"detail": detail}, status_code=413, headers={"connection": "close"})(scope, receive, send)


class OmittedInputs:
    """Fill in the inputs a positional API call leaves out at the end (`{"data": ["a lake"]}`) with null, which the
    handler reads as "the default", so that every input but the prompt is optional on every route.

    Gradio's `/call/v2/<name>` (named inputs) and `gradio_client` fill them in already; `/call/<name>` and
    `/queue/join` pass a short list on, and Gradio refuses it with a multi-line message meant for JavaScript authors.
    `inputs` maps an endpoint's api_name and its fn_index to its number of inputs.
    """

    def __init__(self, app: ASGIApp, inputs: dict[str | int, int]):
        self.app, self.inputs = app, inputs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").rstrip("/")
        call = path.rpartition(f"{API_PREFIX}/call/")[2] if f"{API_PREFIX}/call/" in path else None
        join = path.endswith(f"{API_PREFIX}/queue/join")
        if scope["type"] != "http" or scope.get("method") != "POST" or not (call in self.inputs or join):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:  # already bounded by BodyLimit, which runs first
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away while sending
            body, more = body + message.get("body", b""), message.get("more_body", False)
        body = self.pad(body, call)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope["headers"].append((b"content-length", str(len(body)).encode()))
        await self.app(scope, _replay(body, receive), send)

    def pad(self, body: bytes, api_name: str | None) -> bytes:
        """`body` with its `data` list padded with nulls to the endpoint's inputs; unchanged if it is anything else."""
        try:
            payload = json.loads(body)
        except ValueError:
            return body  # not JSON: Gradio answers it
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            return body
        wanted = self.inputs.get(api_name if api_name is not None else payload.get("fn_index"))
        if not isinstance(wanted, int) or len(payload["data"]) >= wanted:
            return body
        payload["data"] += [None] * (wanted - len(payload["data"]))
        return json.dumps(payload).encode()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` whole, then defers to the real one (which waits for the disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
