"""A SIP trunk in Python: calls to the proxy's own domain go to a carrier.

Tenant params:
- TRUNK: where requests for this proxy's domain go (a SIP URI or
  host:port; `;transport=tcp` in a URI picks the transport);
- TRUNK_BACKUP (optional): tried once when TRUNK fails with 408 or 5xx.

Everything else follows Kamailio's default configuration in miniature:
Max-Forwards and sanity first, in-dialog requests by their Route set,
initial INVITEs record-routed, OPTIONS to the proxy itself answered 200.
Sources outside `trusted` may only reach the trunk.

Build: python3 sdk-python/build.py guests/example-python/route.py -o route.wasm
"""

from wisp import Request, Response, RouteCheck, config, exit, log, vars


def route(req: Request) -> None:
    req.max_forwards()  # a refused check answers for itself: 483
    req.sanity_check()

    if req.info.in_dialog:
        within_dialog(req)
    if req.is_method("ACK", "CANCEL"):
        # The host absorbs those that match a transaction; others go nowhere.
        exit()

    if req.info.uri_is_myself:
        if req.is_method("OPTIONS") and req.uri_user() is None:
            req.reply(200, headers=[("Accept", "application/sdp")])
        to_trunk(req)

    # A foreign domain: only for sources the configuration trusts.
    if not req.info.source_trusted:
        req.reply(403, "Relaying denied")
    if req.is_method("INVITE"):
        req.record_route()
    req.relay()


def within_dialog(req: Request) -> None:
    """Requests of an established dialog (Kamailio's WITHINDLG)."""
    followed = req.loose_route()
    if followed is RouteCheck.VERIFIED or req.info.source_trusted:
        if req.is_method("INVITE"):
            req.record_route()  # a re-INVITE refreshes the route set
        req.relay()
    if req.is_method("ACK"):
        exit()  # never answered
    req.reply(404, "Not here")


def to_trunk(req: Request) -> None:
    trunk = config.param("TRUNK")
    if trunk is None:
        log.warn("TRUNK is not set: nowhere to send calls")
        req.reply(503, "No trunk")
    if req.is_method("INVITE"):
        req.record_route()
    req.relay(trunk)


def on_failure(req: Request, best: Response) -> None:
    """Serial forking: the backup trunk, once, when the first one failed."""
    backup = config.param("TRUNK_BACKUP")
    if backup is None or vars.has("backup") or not best.is_status(408, 500, 502, 503, 504):
        return  # the best response goes upstream
    vars.set("backup")
    log.info(f"trunk answered {best.status()}: trying {backup}")
    req.relay(backup)
