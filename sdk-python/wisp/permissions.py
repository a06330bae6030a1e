"""IP allow-lists (Kamailio's permissions module)."""

from wit_world.imports import permissions as _permissions

from ._message import Request


def allow_source_address(req: Request) -> bool:
    """The source IP is in the tenant's `IPAUTH_ALLOW` (`allow_source_address()`)."""
    return _permissions.allow_source_address(req.raw)
