"""Write wisp routing components in Python.

A routing module defines `route(req)`, and optionally `on_reply(req, res)`,
`on_failure(req, best)` and `on_branch(req, index)`::

    from wisp import Request, Response, vars

    def route(req: Request) -> None:
        req.max_forwards()                 # 483 when exhausted
        if req.is_method("OPTIONS"):
            req.reply(200)
        req.relay()

    # Serial forking when the callee is busy.
    def on_failure(req: Request, best: Response) -> None:
        if best.status() == 486 and not vars.has("retried"):
            vars.set("retried")
            req.relay("sip:voicemail@example.com")

`python3 sdk-python/build.py route.py -o route.wasm` makes a component of
it for the world `wisp:proxy/router@0.2.3` (componentize-py). A hook
decides by calling one of the decisions (`req.reply`, `req.relay`,
`req.forward`, `exit()`): they never return, so a helper function that
decides stops its callers too, like Kamailio's `exit`. A hook that returns
without deciding drops the request (`route`), keeps the response
(`on_reply`; return False to drop a provisional one) or sends the best
response upstream (`on_failure`). A refused check (WispError of kind
"refused": max_forwards, sanity_check, registrar.lookup, auth.authorize...)
that escapes a hook becomes the reply it carries; any other exception is
logged and answered 500 (`route`) or logged (the other hooks).

Until a hook calls `arm(hooks)` (`t_on_reply`, `t_on_failure`,
`t_on_branch`), a transaction runs on_reply, on_failure and on_branch,
those the module leaves out too (as their defaults); after, only the armed
ones: `arm(Hooks.ON_FAILURE)` before `req.relay()` spares the others.
`acc.account(Accounted.ANSWERED)` has the host write the acc record when
the transaction ends, without a hook (Kamailio's acc flags).

The module is imported when the component is built, and its state is
snapshotted into the component: do the work that does not depend on a
request (tables, compiled regexes) at import time, but make no host call
there (no config, log or service: they exist only during a hook).
"""

from . import (
    acc,
    auth,
    config,
    dispatcher,
    kv,
    log,
    nat,
    permissions,
    ratelimit,
    registrar,
    vars,
)
from ._errors import WispError
from ._message import (
    Endpoint,
    Fields,
    Header,
    Headers,
    Hooks,
    Reply,
    Request,
    RequestInfo,
    Response,
    RouteCheck,
    Transport,
    UriParts,
    arm,
    exit,
    is_myself,
    parse_uri,
)
from .acc import Accounted
from .acc import Event as AccEvent
from .nat import NatSigns
from .registrar import Located

__all__ = [
    "AccEvent",
    "Accounted",
    "Endpoint",
    "Fields",
    "Header",
    "Headers",
    "Hooks",
    "Located",
    "NatSigns",
    "Reply",
    "Request",
    "RequestInfo",
    "Response",
    "RouteCheck",
    "Transport",
    "UriParts",
    "WispError",
    "acc",
    "arm",
    "auth",
    "config",
    "dispatcher",
    "exit",
    "is_myself",
    "kv",
    "log",
    "nat",
    "parse_uri",
    "permissions",
    "ratelimit",
    "registrar",
    "vars",
]
