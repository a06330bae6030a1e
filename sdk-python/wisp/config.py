"""The tenant's parameters from the config file (`params = { KEY = "value" }`).

Answers are kept in the instance: a tenant's params are fixed for the life
of an instance (new params load a new version with new instances), and a
route reads the same few names on every request, each a host call
otherwise."""

from typing import Dict, Optional

from wit_world.imports import config as _config

_params: Dict[str, Optional[str]] = {}
_enabled: Dict[str, bool] = {}


def param(name: str, default: Optional[str] = None) -> Optional[str]:
    """The value of a parameter, else `default`."""
    try:
        value = _params[name]
    except KeyError:
        value = _params[name] = _config.param(name)
    return value if value is not None else default


def enabled(name: str) -> bool:
    """Whether a parameter is switched on ("yes", "true", "1", "on"), like
    a Kamailio `#!define`."""
    try:
        return _enabled[name]
    except KeyError:
        on = _enabled[name] = _config.enabled(name)
        return on
