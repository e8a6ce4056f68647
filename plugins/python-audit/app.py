import json
from typing import Optional
from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import host


class Guest(exports.Guest):
    def initial(self, record: str) -> None:
        return None

    def layout(self, event: str) -> Optional[int]:
        # JSON only: the binary layout is for guests built from the Rust types.
        return None

    def call(self, event: str, wire: guest.Wire, state: bytes) -> guest.Reply:
        s = json.loads(state)
        s["extra"] = {"audited_by": "python-audit", "code": s["error"]["code"], "at": host.now_ms()}
        return guest.Reply_Continue(json.dumps(s).encode())

    def lifecycle(self, op: str, record: str) -> None:
        return None

    def health(self) -> None:
        return None
