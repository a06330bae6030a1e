"""NAT helpers (Kamailio's nathelper module and `force_rport`)."""

from wit_world.imports import nat as _nat

from ._message import Request, Response

NatSigns = _nat.NatSigns


def uac_test(req: Request, signs: "NatSigns") -> bool:
    """Whether any of `signs` holds (`nat_uac_test`); Kamailio's "19" is
    `PRIVATE_CONTACT | VIA_ADDRESS_DIFFERS | VIA_PORT_DIFFERS`."""
    return _nat.uac_test(req.raw, signs)


def fix_contact(req: Request) -> bool:
    """Rewrites the Contact to the source address (`fix_nated_contact()`);
    False without one."""
    return _nat.fix_contact(req.raw)


def force_rport(req: Request) -> None:
    """Answers to the source port even without `;rport` (`force_rport()`)."""
    _nat.force_rport(req.raw)


def fix_reply_contact(res: Response) -> bool:
    """`fix_nated_contact()` in `on_reply`: the response's Contact gets the
    address it came from. False without one."""
    return _nat.fix_reply_contact(res.raw)
