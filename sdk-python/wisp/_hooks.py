"""The world's exports around a routing module's hook functions.

`build.py` (sdk-python) makes the component's entry module call `world(module)`:
the hooks the module leaves out get Kamailio's behaviour without the
matching route (keep every response, send the best response upstream,
leave branches as they are).
"""

import traceback
from types import ModuleType
from typing import Callable, Optional

from wit_world.imports import sip

from . import log
from ._errors import WispError
from ._message import Decision, Request, Response, release_fields

_DROP = sip.Action_Drop()
_UPSTREAM = sip.FailureAction_Upstream()
_SERVER_ERROR = sip.Action_Reply(sip.Reply(500, None, []))
_KEEP = sip.ReplyVerdict.KEEP


def _describe(err: BaseException) -> str:
    if isinstance(err, WispError):
        return f"failed: {err}"
    where = ""
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    return f"raised {type(err).__name__}: {err}{where}"


def _hook(module: ModuleType, name: str) -> Optional[Callable]:
    fn = getattr(module, name, None)
    if fn is not None and not callable(fn):
        raise TypeError(f"the routing module's {name} must be a function")
    return fn


def world(module: ModuleType) -> type:
    """The class componentize-py exports as the `router` world, calling the
    hook functions of `module`: `route(req)` (required), and optionally
    `on_reply(req, res)`, `on_failure(req, best)`, `on_branch(req, index)`."""
    route = _hook(module, "route")
    if route is None:
        raise TypeError(f"the routing module {module.__name__} must define route(req)")
    on_reply = _hook(module, "on_reply")
    on_failure = _hook(module, "on_failure")
    on_branch = _hook(module, "on_branch")

    class WitWorld:
        def route(self, raw: "sip.Request", info: "sip.RequestInfo") -> "sip.Action":
            try:
                route(Request(raw, info))
                return _DROP
            except Decision as decided:
                kind = decided.kind
                if kind == "reply":
                    return sip.Action_Reply(decided.value)
                if kind == "relay":
                    return sip.Action_Relay(decided.value)
                if kind == "forward":
                    return sip.Action_Forward(decided.value)
                return _DROP
            except Exception as err:
                if isinstance(err, WispError) and err.reply is not None:
                    return sip.Action_Reply(err.reply)
                log.error(f"route {_describe(err)}")
                return _SERVER_ERROR
            finally:
                release_fields()

        def on_reply(self, req: "sip.Request", res: "sip.Response") -> "sip.ReplyVerdict":
            if on_reply is None:
                return _KEEP
            try:
                verdict = on_reply(Request(req), Response(res))
                if verdict is False or verdict == "drop" or verdict is sip.ReplyVerdict.DROP:
                    return sip.ReplyVerdict.DROP
                return _KEEP
            except Decision as decided:
                if decided.kind is not None:
                    log.error(f"on_reply cannot {decided.kind}: the response is kept")
                return _KEEP
            except Exception as err:
                log.error(f"on_reply {_describe(err)}")
                return _KEEP
            finally:
                release_fields()

        def on_failure(self, req: "sip.Request", best: "sip.Response") -> "sip.FailureAction":
            if on_failure is None:
                return _UPSTREAM
            try:
                on_failure(Request(req), Response(best))
                return _UPSTREAM
            except Decision as decided:
                kind = decided.kind
                if kind == "reply":
                    return sip.FailureAction_Reply(decided.value)
                if kind == "relay":
                    return sip.FailureAction_Relay(decided.value)
                if kind is not None:
                    log.error(f"on_failure cannot {kind}: the best response goes upstream")
                return _UPSTREAM
            except Exception as err:
                if isinstance(err, WispError) and err.reply is not None:
                    return sip.FailureAction_Reply(err.reply)
                log.error(f"on_failure {_describe(err)}")
                return _UPSTREAM
            finally:
                release_fields()

        def on_branch(self, req: "sip.Request", index: int) -> None:
            if on_branch is None:
                return
            try:
                on_branch(Request(req), index)
            except Decision as decided:
                if decided.kind is not None:
                    log.error(f"on_branch cannot {decided.kind}: the branch goes as it is")
            except Exception as err:
                log.error(f"on_branch {_describe(err)}")
            finally:
                release_fields()

    return WitWorld
