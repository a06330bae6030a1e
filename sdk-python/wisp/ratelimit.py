"""Rate limits by any key, and the proxy's ban list (Kamailio's pipelimit,
and pike's bans in an htable `ipban`). A ban drops the address's messages
on arrival, before any hook."""

from typing import Optional

from wit_world.imports import ratelimit as _ratelimit

from ._errors import Err, WispError
from ._message import Request


def check(key: str, limit: int, window_seconds: int) -> bool:
    """Counts a hit of `key`: True while within `limit` per
    `window_seconds`, False past it (not counted)."""
    return _ratelimit.check(key, limit, window_seconds)


def ban(ip: str, seconds: int) -> None:
    """Bans an IP address for `seconds` (at most a day); WispError when
    refused (not an IP, 0 seconds, a trusted source)."""
    try:
        _ratelimit.ban(ip, seconds)
    except Err as err:
        raise WispError(err.value) from None


def ban_source(req: Request, seconds: int) -> None:
    """Bans the address the request came from."""
    ban(req.info.source.ip, seconds)


def banned(ip: str) -> Optional[int]:
    """The seconds left of the ban on `ip`; None when it is not banned."""
    return _ratelimit.banned(ip)


def unban(ip: str) -> bool:
    """Lifts a ban this tenant set; whether there was one."""
    return _ratelimit.unban(ip)
