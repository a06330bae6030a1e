"""The location service (Kamailio's registrar and usrloc modules).

Bindings are kept per tenant, keyed by the user part of the address of
record."""

from typing import Optional

from wit_world.imports import registrar as _registrar

from ._errors import Err, WispError
from ._message import Reply, Request

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
    flags = SaveFlags(0)
    if persistent:
        flags |= SaveFlags.PERSISTENT
    if nat:
        flags |= SaveFlags.NAT
    options = _registrar.SaveOptions(flags, default_expires, min_expires, max_expires, max_contacts)
    try:
        return _registrar.save(req.raw, options)
    except Err as err:
        raise WispError(err.value) from None


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
