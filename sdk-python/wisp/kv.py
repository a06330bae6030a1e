"""The tenant's key-value store with expiry, shared by all its instances
(Kamailio's htable)."""

from typing import Optional

from wit_world.imports import kv as _kv

from ._errors import Err, WispError


def get(key: str) -> Optional[str]:
    """A value that has not expired (`$sht(table=>key)`)."""
    return _kv.get(key)


def set(key: str, value: str, ttl_seconds: Optional[int] = None) -> None:  # noqa: A001
    """Sets a key, for `ttl_seconds` if given; WispError past the quota."""
    try:
        _kv.set(key, value, ttl_seconds)
    except Err as err:
        raise WispError(err.value) from None


def delete(key: str) -> bool:
    """Removes a key (`sht_rm_name`); whether it was there."""
    return _kv.delete(key)


def incr(key: str, delta: int = 1, ttl_seconds: Optional[int] = None) -> int:
    """Adds `delta` to an integer value (missing: 0) and returns the result
    (`$shtinc`); a new key gets `ttl_seconds`. WispError when the value is
    not an integer or past the quota."""
    try:
        return _kv.incr(key, delta, ttl_seconds)
    except Err as err:
        raise WispError(err.value) from None
