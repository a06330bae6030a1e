"""Accounting records under the log target `wisp::acc` (Kamailio's acc)."""

from typing import Union

from wit_world.imports import acc as _acc

from ._message import Request, Response

Event = _acc.Event
Accounted = _acc.Accounted


def report(req: Request, event: Union["Event", str], res: Response) -> None:
    """Writes one record of `req` and its final answer `res`
    (`acc_log_request`); `event` is an Event or its name ("start", "stop",
    "failed")."""
    if isinstance(event, str):
        event = Event[event.upper()]
    _acc.report(req.raw, event, res.raw)


def account(events: "Accounted") -> None:
    """Has the host write the current transaction's record by itself when
    its final answer goes upstream (Kamailio's acc flags: `setflag` with
    `log_flag`, `log_missed_flag`, `failed_transaction_flag`; since 0.2.1),
    without a reply or failure hook: `Accounted.ANSWERED` writes `start` for
    a 2xx to an INVITE and `stop` for a 2xx to a BYE, `Accounted.FAILED`
    writes `failed` for a final answer above 299 (a cancelled call's 487
    too). Adds to the events asked before in the transaction; only relayed
    transactions are recorded, once, on the first final answer::

        acc.account(Accounted.ANSWERED | Accounted.FAILED)
    """
    _acc.account(events)
