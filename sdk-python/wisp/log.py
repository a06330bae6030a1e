"""Writing to the proxy's log, tagged with the tenant (Kamailio's `xlog`)."""

from wit_world.imports import log as _log

Level = _log.Level


def write(level: "Level", message: str) -> None:
    """Writes `message` at `level`."""
    _log.write(level, message)


def error(message: str) -> None:
    _log.write(Level.ERROR, message)


def warn(message: str) -> None:
    _log.write(Level.WARN, message)


def info(message: str) -> None:
    _log.write(Level.INFO, message)


def debug(message: str) -> None:
    _log.write(Level.DEBUG, message)
