"""Destination sets and load balancing (Kamailio's dispatcher): the
tenant's sets from its `dispatcher` section of the configuration, probed
with OPTIONS by the host::

    from wisp import dispatcher

    def route(req):
        dispatcher.select(req, 1, "round-robin")   # 503 when none is up
        req.relay()

    def on_failure(req, best):
        if best.status() in (408, 500, 502, 503) and dispatcher.next(req):
            req.relay()                             # ds_next_dst(); t_relay()
"""

from typing import List, Optional, Union

from wit_world.imports import dispatcher as _dispatcher

from ._errors import Err, WispError
from ._message import Request

Algorithm = _dispatcher.Algorithm
Target = _dispatcher.Target
State = _dispatcher.State
Destination = _dispatcher.Destination


def _enum(kind, value):
    """An enum member, or its WIT name ("round-robin", "request-uri")."""
    if isinstance(value, str):
        return kind[value.upper().replace("-", "_")]
    return value


def select(
    req: Request,
    set: int,
    algorithm: Union["Algorithm", str],
    target: Union["Target", str] = "destination",
) -> "Destination":
    """Chooses a destination of `set` that is up by `algorithm` and does
    `target` with it (`ds_select_dst`); the others up are kept for `next`.
    WispError "refused" (503) when none is up, which answers the request if
    it escapes the hook; "invalid" for a set the tenant does not have."""
    try:
        return _dispatcher.select(
            req.raw, set, _enum(Algorithm, algorithm), _enum(Target, target)
        )
    except Err as err:
        raise WispError(err.value) from None


def next(req: Request) -> Optional["Destination"]:
    """The next destination still up (`ds_next_dst`, in `on_failure`);
    None when none is left."""
    return _dispatcher.next(req.raw)


def current() -> Optional["Destination"]:
    """The destination chosen last in this transaction."""
    return _dispatcher.current()


def mark(set: int, uri: str, state: Union["State", str]) -> None:
    """Sets a destination's state (`ds_mark_dst`): "up", "down" or
    "disabled"; WispError for a destination the tenant does not have."""
    try:
        _dispatcher.mark(set, uri, _enum(State, state))
    except Err as err:
        raise WispError(err.value) from None


def mark_current_down() -> bool:
    """Marks the destination chosen last down (`ds_mark_dst("ip")`); False
    when there is none."""
    d = _dispatcher.current()
    if d is None:
        return False
    try:
        _dispatcher.mark(d.set, d.uri, State.DOWN)
    except Err:
        return False
    return True


def destinations(set: int) -> List["Destination"]:
    """The destinations of a set with their states."""
    return _dispatcher.destinations(set)
