"""WispError, and the one place where the bindings' `Err` becomes it."""

from typing import Callable, Optional, TypeVar

from componentize_py_types import Err
from wit_world.imports import sip

T = TypeVar("T")

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


def checked(call: Callable[..., T], *args) -> T:
    """Runs a host call returning `result<_, error>`: an `err` raises WispError."""
    try:
        return call(*args)
    except Err as err:
        raise WispError(err.value) from None
