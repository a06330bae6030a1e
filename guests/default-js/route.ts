// wisp's bundled routing in TypeScript: the request route of Kamailio's
// default config (`request_route` and its REQINIT, WITHINDLG and RELAY
// blocks), the same as guests/default (Rust), line for line.
//
// Registrar, location and authentication come with the services that back
// them; until then requests for this proxy's own users are refused.

import { Request, config, log } from "@wisp/sdk";

export function route(req: Request): void {
  // route(REQINIT): loop and sanity checks.
  const hops = req.maxForwards(maxForwardsLimit());
  if (hops) return req.reject(hops);
  const insane = req.sanityCheck();
  if (insane) {
    log.info(`malformed request: ${insane.reason}`);
    return req.reject(insane);
  }

  // CANCEL goes where its INVITE went (stateless relay).
  if (req.isMethod("CANCEL")) return req.forward();

  // route(WITHINDLG)
  if (req.hasToTag()) return withinDialog(req);

  // Initial requests: keep dialog-forming ones on this proxy.
  if (req.isMethod("INVITE", "SUBSCRIBE")) req.recordRoute();

  // Requests for this proxy's own domain need the location service.
  if (req.uriIsMyself()) return local(req);

  // route(RELAY)
  req.forward();
}

function maxForwardsLimit(): number {
  // Like Rust's `str::parse::<u32>`: digits only, within u32.
  const text = config.param("MAX_FORWARDS") ?? "";
  const value = /^\+?[0-9]+$/.test(text) ? Number(text) : NaN;
  return value <= 0xffffffff ? value : 10;
}

/** route(WITHINDLG): requests inside a dialog follow its Route set. */
function withinDialog(req: Request): void {
  if (req.looseRoute()) return req.forward();
  if (req.isMethod("ACK")) {
    // An ACK without Route: stateless relay to the R-URI, as Kamailio does
    // when no transaction matched.
    return req.forward();
  }
  req.reply(404, "Not here");
}

/** Requests addressed to this proxy itself. */
function local(req: Request): void {
  if (req.isMethod("OPTIONS") && req.uriUser() === undefined) return req.reply(200, "OK");
  if (req.isMethod("REGISTER")) return req.reply(501, "Registrar Not Enabled");
  if (req.uriUser() === undefined) return req.reply(484, "Address Incomplete");
  req.reply(404, "Not Found");
}
