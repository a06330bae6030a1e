"""Accounting records under the log target `wisp::acc` (Kamailio's acc)."""

from typing import Union

from wit_world.imports import acc as _acc

from ._message import Request, Response

Event = _acc.Event


def report(req: Request, event: Union["Event", str], res: Response) -> None:
    """One record of `req` and its final answer `res`; `event` is an Event
    or its name ("start", "stop", "failed")."""
    if isinstance(event, str):
        event = Event[event.upper()]
    _acc.report(req.raw, event, res.raw)
