"""Variables of the current transaction, kept from `route` through
`on_branch`, `on_reply` and `on_failure` (Kamailio's `$avp(name)`; a flag
is a variable that is set). Module globals are not kept per transaction:
instances are pooled and reused."""

from typing import Optional

from wit_world.imports import vars as _vars

from ._errors import Err, WispError


def get(name: str) -> Optional[str]:
    """A variable set earlier in this transaction."""
    return _vars.get(name)


def has(name: str) -> bool:
    """Whether a variable is set (`isflagset`)."""
    return _vars.get(name) is not None


def set(name: str, value: str = "1") -> None:  # noqa: A001 - the WIT name
    """Sets a variable (`setflag` with no value); WispError past the
    tenant's limits."""
    try:
        _vars.set(name, value)
    except Err as err:
        raise WispError(err.value) from None


def remove(name: str) -> bool:
    """Removes a variable (`resetflag`); whether it was set."""
    return _vars.remove(name)
