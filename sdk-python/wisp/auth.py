"""Digest authentication against the subscribers of `wisp user add`
(Kamailio's auth and auth_db modules)."""

from wit_world.imports import auth as _auth

from ._errors import Err, WispError
from ._message import Decision, Request


def authorize(req: Request, realm: str) -> str:
    """Checks the credentials for `realm` (`auth_check`): the authenticated
    user (`$au`). A refused WispError carrying the challenge (401 for a
    REGISTER, else 407) when they are missing, stale or wrong; unavailable
    when the subscriber store failed."""
    try:
        return _auth.authorize(req.raw, realm)
    except Err as err:
        raise WispError(err.value) from None


def authorize_or_challenge(req: Request, realm: str) -> str:
    """`authorize`, with the challenge sent by wisp (since WIT 0.2.2), as
    Kamailio's `auth_challenge` sends its own: the authenticated user when
    the credentials check; else the request is answered with the 401 (a
    REGISTER) or 407 challenge `authorize` would refuse with, and the hook
    stops there, as `exit()` does (the hook's decision is `drop`). Faster than letting `authorize`'s
    refused WispError escape: the challenge is not copied into Python and
    back. An unavailable WispError when the subscriber store failed, or
    not-allowed outside `route` and `on_failure` or when the request is
    answered already: nothing is answered then (500 if it escapes
    `route`)."""
    try:
        user = _auth.authorize_or_challenge(req.raw, realm)
    except Err as err:
        raise WispError(err.value) from None
    if user is None:
        raise Decision(None)
    return user


def consume_credentials(req: Request) -> None:
    """Removes the credentials used, so they are not relayed
    (`consume_credentials()`)."""
    _auth.consume_credentials(req.raw)
