"""Webhook, in Python: the `webhook` example's job, built with componentize-py against the
`plugin-http` world. On `on_user_after_save_failure` it posts a JSON summary of the failed
save to the URL in its settings, `{"url": "https://hooks.example.com/…"}`, with
`Authorization: Bearer <token>` when its secret `token` is set. Its HTTP client is
componentize-py's own `poll_loop` (asyncio over `wasi:http`), so the operator's grant
(`http` for the URL's origin) and the host's checks apply as to any guest.

The state goes on unchanged; a failed post fails the step, so that an operator sees a hook
that stopped working.
"""

import asyncio
import json
from typing import Optional
from urllib import parse

import poll_loop
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import host
from wit_world.imports.types import (
    Fields,
    Method_Post,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)


async def post(url: str, headers: list, body: bytes) -> tuple:
    """Posts `body` to `url`; the status and the answer's body (read to its end, so the
    exchange completes)."""
    u = parse.urlsplit(url)
    request = OutgoingRequest(Fields.from_list(headers))
    request.set_method(Method_Post())
    request.set_scheme(Scheme_Https() if u.scheme == "https" else Scheme_Http())
    request.set_authority(u.netloc)
    request.set_path_with_query(u.path + ("?" + u.query if u.query else "") or "/")
    sink = poll_loop.Sink(request.body())
    response = asyncio.ensure_future(poll_loop.send(request))
    await sink.send(body)
    sink.close()
    response = await response
    status = response.status()
    stream = poll_loop.Stream(response.consume())
    answer = b""
    while True:
        chunk = await stream.next()
        if chunk is None:
            return status, answer
        answer += chunk


def settings() -> dict:
    raw = host.settings()
    s = json.loads(raw) if raw else {}
    if not s.get("url"):
        raise Err("python-webhook: no `url` in its settings")
    return s


class Guest(exports.Guest):
    def initial(self, record: str) -> None:
        return None

    def layout(self, event: str) -> Optional[int]:
        return None

    def call(self, event: str, wire: guest.Wire, state: bytes) -> guest.Reply:
        s = settings()
        url = s["url"]
        st = json.loads(state)
        summary = {
            "event": event,
            "code": st["error"]["code"],
            "message": st["error"]["message"],
            "ip": st["ip"],
            "path": st["conn"]["path"],
            "sent_by": "python-webhook",
        }
        headers = [("content-type", b"application/json")]
        if s.get("token"):
            headers.append(("authorization", b"Bearer " + s["token"].encode()))
        loop = poll_loop.PollLoop()
        asyncio.set_event_loop(loop)
        try:
            status, _ = loop.run_until_complete(
                post(url, headers, json.dumps(summary).encode())
            )
        except Err as e:
            raise Err(f"python-webhook: posting to {url}: {e.value}")
        finally:
            loop.close()
        if status >= 300:
            raise Err(f"python-webhook: {url} answered {status}")
        host.log(host.Level.INFO, f"posted a failed save to {url}: {status}")
        return guest.Reply_Continue(state)

    def lifecycle(self, op: str, record: str) -> None:
        return None

    def health(self) -> None:
        return None
