"""WispError: what the bindings' `Err` becomes.

Every wrapper of a fallible host call catches `Err` itself (a try block
costs nothing until it raises; a helper taking the call would add a frame
to every call) and raises `WispError(err.value)` from None."""

from typing import Optional

from componentize_py_types import Err  # noqa: F401 - for the wrappers
from wit_world.imports import sip

_KINDS = {
    sip.Error_Invalid: ("invalid", "invalid argument"),
    sip.Error_NotAllowed: ("not-allowed", "not allowed"),
    sip.Error_Unavailable: ("unavailable", "unavailable"),
    sip.Error_Refused: ("refused", "refused"),
}


class WispError(Exception):
    """A host call did not do what it was asked (the WIT `sip.error`).

    `kind` is "invalid", "not-allowed", "unavailable" or "refused";
    `detail` is what the host said (for "refused", the reply's code and
    reason); `reply` is, for "refused", the reply the request calls for
    (483, a 401/407 challenge, 404...). A refused WispError that escapes a
    hook is answered with its reply; any other is logged and answered 500.
    """

    def __init__(self, error: "sip.Error"):
        kind, described = _KINDS[type(error)]
        if isinstance(error, sip.Error_Refused):
            reply = error.value
            detail = f"{reply.code} {reply.reason or ''}".rstrip()
        else:
            reply = None
            detail = error.value
        super().__init__(f"{described}: {detail}")
        self.kind: str = kind
        self.detail: str = detail
        self.reply: Optional["sip.Reply"] = reply

