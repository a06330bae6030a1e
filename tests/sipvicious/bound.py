"""Runs a SIPVicious tool with its socket bound to one address.

SIPVicious 0.3.8 parses -b (--bindingip) but never hands it to the scanner,
which binds to every address and so sends from 127.0.0.1 on loopback.
Usage: python3 bound.py IP TOOL [ARGS...], TOOL being svwar or svcrack.
"""

import importlib
import socket
import sys

ip, tool, *args = sys.argv[1:]
_bind = socket.socket.bind


def bind(self, address):
    if isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
        address = (ip,) + tuple(address[1:])
    return _bind(self, address)


socket.socket.bind = bind
sys.argv = [f"sipvicious_{tool}", *args]
importlib.import_module(f"sipvicious.{tool}").main()
