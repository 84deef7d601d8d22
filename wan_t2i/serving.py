"""What the app's server does around Gradio: refuse an oversized body, fill in left-out inputs, delete old outputs.

Each is ASGI middleware, handed to Gradio's FastAPI app as `launch(app_kwargs={"middleware": [...]})` (FastAPI's own
`middleware` argument), so the first two run before any route parses a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
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
log = logging.getLogger(__name__)


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


class CacheSweeper:
    """Delete the files in Gradio's cache folder once they are `age` seconds old, every `every` seconds, from the
    server's first request on (so a restart also clears what the last run left): the served images, and uploads.

    `blocks.delete_cache` gives (every, age) and `blocks.GRADIO_CACHE` the folder. Gradio's own `delete_cache` deletes
    only the files its components recorded, and Gradio 6 records each session's outputs on that session's copies of
    the components, which its cleanup never reads: served images were never deleted. The folder (GRADIO_TEMP_DIR)
    should be this app's alone, as on a Space. Files a component keeps for the server's life (its initial value, the
    page's opening images: Gradio's `keep_in_cache`) are spared.
    """

    def __init__(self, app: ASGIApp, blocks: Any):
        self.app, self.blocks, self.folder = app, blocks, Path(blocks.GRADIO_CACHE)
        self.every, self.age = blocks.delete_cache
        self.task: asyncio.Task | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.task is None and scope["type"] == "http":
            self.task = asyncio.get_running_loop().create_task(self.sweep())
        await self.app(scope, receive, send)

    async def sweep(self) -> None:
        while True:
            try:
                kept = {str(p) for block in self.blocks.blocks.values() for p in getattr(block, "keep_in_cache", ())}
                await asyncio.to_thread(delete_older_than, self.folder, self.age, kept)
            except OSError as error:  # a folder that went away, a permission: try again next time
                log.warning("cache sweep of %s failed: %s", self.folder, error)
            await asyncio.sleep(self.every)


def delete_older_than(folder: Path, age: float, keep: set[str] = frozenset()) -> int:
    """Delete the files (but those in `keep`) and the empty folders under `folder` last changed more than `age`
    seconds ago; returns how many files went. Gradio's `delete_cache` ages files the same way (by ctime). A folder's
    age spares the one Gradio has just made for a file it is about to write, and an emptied one goes a sweep later."""
    cutoff, deleted = time.time() - age, 0
    for root, folders, files in os.walk(folder, topdown=False):  # a folder's files before the folder
        for path, is_folder in [*((Path(root, f), False) for f in files), *((Path(root, f), True) for f in folders)]:
            try:
                if path.lstat().st_ctime >= cutoff or str(path) in keep:
                    continue
                if is_folder:
                    path.rmdir()  # OSError where it is not empty
                else:
                    path.unlink()
                    deleted += 1
            except OSError:  # deleted meanwhile, not empty, or not ours to touch: left for the next sweep
                pass
    return deleted
