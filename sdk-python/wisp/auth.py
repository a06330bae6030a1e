"""Digest authentication against the subscribers of `wisp user add`
(Kamailio's auth and auth_db modules)."""

from wit_world.imports import auth as _auth

from ._errors import Err, WispError
from ._message import Request


def authorize(req: Request, realm: str) -> str:
    """Checks the credentials for `realm` (`auth_check`): the authenticated
    user (`$au`). A refused WispError carrying the challenge (401 for a
    REGISTER, else 407) when they are missing, stale or wrong; unavailable
    when the subscriber store failed."""
    try:
        return _auth.authorize(req.raw, realm)
    except Err as err:
        raise WispError(err.value) from None


def consume_credentials(req: Request) -> None:
    """Removes the credentials used, so they are not relayed
    (`consume_credentials()`)."""
    _auth.consume_credentials(req.raw)
