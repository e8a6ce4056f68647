"""A wrapper in Python (componentize-py, world `wrapper-basic`): marks the state on the
way in, retries the rest of the chain once when it fails, then falls back to its input
marked with why; on success it notes how many runs it took."""

import json
from typing import Optional
from wit_world import exports
from wit_world.exports import guest, wrapper


class Guest(exports.Guest):
    def initial(self, record: str) -> None:
        return None

    def layout(self, event: str) -> Optional[int]:
        return None

    def call(self, event: str, wire: guest.Wire, state: bytes) -> guest.Reply:
        # A wrapper's hook is never called as a step.
        raise NotImplementedError("python-wrapper is a wrapper")

    def lifecycle(self, op: str, record: str) -> None:
        return None

    def health(self) -> None:
        return None


def marked(state: dict, key: str, value) -> dict:
    if not isinstance(state.get("extra"), dict):
        state["extra"] = {}
    state["extra"][key] = value
    return state


class Wrapper(exports.Wrapper):
    def before(self, event: str, state: str) -> wrapper.Opened:
        s = json.loads(state)
        token = json.dumps({"input": s, "runs": 1}).encode()
        s = marked(s, "python_before", True)
        return wrapper.Opened(wrapper.Entry_Continue(json.dumps(s)), token)

    def after(self, event: str, outcome: wrapper.Outcome, token: bytes) -> wrapper.Closing:
        t = json.loads(token)
        if isinstance(outcome, wrapper.Outcome_Continued):
            s = marked(json.loads(outcome.value), "python_runs", t["runs"])
            return wrapper.Closing_Continue(json.dumps(s))
        if isinstance(outcome, wrapper.Outcome_Halted):
            return wrapper.Closing_Keep()
        if t["runs"] < 2:
            again = {"input": t["input"], "runs": t["runs"] + 1}
            return wrapper.Closing_Retry(
                wrapper.Again(json.dumps(t["input"]), json.dumps(again).encode())
            )
        s = marked(t["input"], "python_fallback", outcome.value)
        return wrapper.Closing_Continue(json.dumps(s))
