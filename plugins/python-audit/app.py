import json
from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import host


class Guest(exports.Guest):
    def initial(self, record: str) -> None:
        return None

    def call(self, event: str, state: bytes) -> guest.Reply:
        s = json.loads(state)
        s["extra"] = {"audited_by": "python-audit", "code": s["error"]["code"], "at": host.now_ms()}
        return guest.Reply_Continue(json.dumps(s).encode())

    def lifecycle(self, op: str, record: str) -> None:
        return None

    def health(self) -> None:
        return None
