"""The location service (Kamailio's registrar and usrloc modules).

Bindings are kept per tenant, keyed by the user part of the address of
record."""

from typing import NoReturn, Optional

from wit_world.imports import registrar as _registrar

from ._errors import Err, WispError
from ._message import Decision, Reply, Request

Located = _registrar.Located
SaveFlags = _registrar.SaveFlags


def save(
    req: Request,
    *,
    persistent: bool = False,
    nat: bool = False,
    default_expires: Optional[int] = None,
    min_expires: Optional[int] = None,
    max_expires: Optional[int] = None,
    max_contacts: Optional[int] = None,
) -> Reply:
    """Saves the bindings of a REGISTER (`save("location")`) and returns the
    200 OK to answer with: `req.reply(registrar.save(req))`.

    `persistent` keeps them across restarts (`WITH_USRLOCDB`: written to
    the database within the host's `location_write_interval_ms`); `nat` sends
    requests to the REGISTER's source address. Each None takes the tenant
    param (`REG_DEFAULT_EXPIRES`, `REG_MIN_EXPIRES`, `REG_MAX_EXPIRES`,
    `REG_MAX_CONTACTS`), else the WIT's default. A refused WispError (400,
    403, 423, 503) or an unavailable one; nothing is written then.
    """
    options = _options(persistent, nat, default_expires, min_expires, max_expires, max_contacts)
    try:
        return _registrar.save(req.raw, options)
    except Err as err:
        raise WispError(err.value) from None


def save_and_reply(
    req: Request,
    *,
    persistent: bool = False,
    nat: bool = False,
    default_expires: Optional[int] = None,
    min_expires: Optional[int] = None,
    max_expires: Optional[int] = None,
    max_contacts: Optional[int] = None,
) -> NoReturn:
    """`save`, with the reply sent by wisp (since WIT 0.2.2), as Kamailio's
    `save("location")` sends its own: the REGISTER is answered with the 200
    OK `save` would return, or with its refusal (400, 403, 423, 503), and
    the hook stops there, as `exit()` does (the hook's decision is
    `drop`; in `on_failure` the answer goes upstream in place of the best
    response). Never returns. Faster than
    `req.reply(registrar.save(req))`: the reply is not copied into Python
    and back. The options are `save`'s. An unavailable WispError when the
    store failed, or not-allowed outside `route` and `on_failure` or when
    the request is answered already: nothing is answered then (500 if it
    escapes `route`).
    """
    options = _options(persistent, nat, default_expires, min_expires, max_expires, max_contacts)
    try:
        _registrar.save_and_reply(req.raw, options)
    except Err as err:
        raise WispError(err.value) from None
    raise Decision(None)


def _options(
    persistent: bool,
    nat: bool,
    default_expires: Optional[int],
    min_expires: Optional[int],
    max_expires: Optional[int],
    max_contacts: Optional[int],
) -> "_registrar.SaveOptions":
    flags = SaveFlags(0)
    if persistent:
        flags |= SaveFlags.PERSISTENT
    if nat:
        flags |= SaveFlags.NAT
    return _registrar.SaveOptions(flags, default_expires, min_expires, max_expires, max_contacts)


def lookup(req: Request) -> Located:
    """Points the request at the user's contacts (`lookup("location")`):
    the best becomes the Request-URI, the others branches. A refused
    WispError (404, 405), or an unavailable one when the store failed."""
    try:
        return _registrar.lookup(req.raw)
    except Err as err:
        raise WispError(err.value) from None


def unregister(user: str) -> int:
    """Removes every binding of a user (`unregister`); how many there were."""
    try:
        return _registrar.unregister(user)
    except Err as err:
        raise WispError(err.value) from None


def registered(user: str) -> bool:
    """Whether a user has a live binding (`registered()`)."""
    try:
        return _registrar.registered(user)
    except Err as err:
        raise WispError(err.value) from None
