#!/usr/bin/env python3
"""A PJSIP user agent (pjsua2) for wisp's end-to-end tests.

Registers over TLS with digest authentication, then either calls a URI and
hangs up after a while (--call URI --hangup-after MS) or waits for a call,
answers it 200 and waits for the caller's BYE (--answer).

Everything runs in the main thread: no PJSIP worker threads
(uaConfig.threadCnt = 0), callbacks only from libHandleEvents
(uaConfig.mainThreadOnly), audio on the null device.

Prints one JSON object a line on stdout, one for each event:

  {"event": "listening", "port": 40123, "pjsip": "2.15.1"}
  {"event": "tls", "state": "connected", "remote": "127.0.0.1:5061",
   "offered": ["TLSv1.2"], "cipher": "ECDHE-ECDSA-AES256-GCM-SHA384",
   "verified": true}
  {"event": "registered", "code": 200, "reason": "OK"}
  {"event": "challenged", "method": "INVITE", "code": 407}
  {"event": "incoming", "remote": "<sip:alice@...>"}
  {"event": "call_state", "call_id": "...", "state": "CONFIRMED",
   "code": 200, "reason": "OK"}
  {"event": "media", "index": 0, "status": "active"}
  {"event": "bye", "direction": "sent", "code": 200}
  {"event": "ended", "code": 200, "reason": "Normal call clearing"}
  {"event": "error", "message": "..."}
  {"event": "done", "ok": true}

Exits 0 when the whole flow happened, 1 when something went wrong (a
registration refused, a call that failed, a missing BYE), 2 on the overall
timeout, 3 without pjsua2. PJSIP's own log goes to stderr (--log-level).
"""

import argparse
import json
import os
import sys
import time
import traceback

try:
    import pjsua2 as pj
except ImportError:
    print(
        "pjsua2 is not installed: pip install pjsua2-python (tests/run.sh does)",
        file=sys.stderr,
    )
    sys.exit(3)


# PJSIP's console log writes to file descriptor 1: the events get a copy
# of stdout of their own, and descriptor 1 becomes stderr.
EVENTS = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)


def emit(event, **fields):
    fields = {"event": event, **fields}
    EVENTS.write(json.dumps(fields) + "\n")
    EVENTS.flush()


class State:
    """What happened so far, and whether the run is over."""

    def __init__(self, mode):
        self.mode = mode  # "call" or "answer"
        self.registered = False
        self.confirmed_at = None
        self.hung_up = False
        self.bye = None  # "sent" / "received", with its final code
        self.bye_code = None
        self.ended = False
        self.failed = None  # a message when something went wrong
        self.calls = []  # every Call object, kept alive until the end

    def fail(self, message):
        if self.failed is None:
            self.failed = message
            emit("error", message=message)

    def done(self):
        return self.failed is not None or self.ended


class Call(pj.Call):
    def __init__(self, account, state, call_id=pj.PJSUA_INVALID_ID):
        pj.Call.__init__(self, account, call_id)
        self.state = state
        self.seen_bye = set()

    def onCallState(self, prm):
        try:
            ci = self.getInfo()
            emit(
                "call_state",
                call_id=ci.callIdString,
                state=ci.stateText,
                code=ci.lastStatusCode,
                reason=ci.lastReason,
            )
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self.state.confirmed_at = time.monotonic()
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                if prm.e.type == pj.PJSIP_EVENT_TSX_STATE:
                    self.saw_bye(prm.e.body.tsxState.tsx)
                if self.state.hung_up and "sent" not in self.seen_bye:
                    # The end of a call we hang up is reported once our
                    # BYE has its final answer (or its transaction failed),
                    # as a user event without the transaction: the call's
                    # last status is then the BYE's answer, or 200 from
                    # the INVITE when that answer was 2xx as well.
                    self.seen_bye.add("sent")
                    emit("bye", direction="sent", code=ci.lastStatusCode)
                    self.state.bye = "sent"
                    self.state.bye_code = ci.lastStatusCode
                emit("ended", code=ci.lastStatusCode, reason=ci.lastReason)
                if self.state.confirmed_at is None:
                    self.state.fail(
                        f"call ended before it was confirmed: {ci.lastStatusCode} {ci.lastReason}"
                    )
                elif self.state.bye is None:
                    self.state.fail("call ended without a BYE")
                self.state.ended = True
        except Exception:  # an exception must not cross into PJSIP
            self.state.fail("onCallState: " + traceback.format_exc())

    def saw_bye(self, tsx):
        """A BYE transaction with a final answer: which way, and the code."""
        if tsx.method != "BYE" or tsx.statusCode < 200:
            return
        direction = "sent" if tsx.role == pj.PJSIP_ROLE_UAC else "received"
        if direction in self.seen_bye:
            return
        self.seen_bye.add(direction)
        emit("bye", direction=direction, code=tsx.statusCode)
        self.state.bye = direction
        self.state.bye_code = tsx.statusCode

    def onCallTsxState(self, prm):
        # A BYE received: its transaction is reported here. A BYE sent is
        # not (pjsua no longer reports a call it hangs up): its answer is
        # the event that disconnects the call, seen in onCallState.
        try:
            if prm.e.type != pj.PJSIP_EVENT_TSX_STATE:
                return
            tsx = prm.e.body.tsxState.tsx
            if (
                tsx.role == pj.PJSIP_ROLE_UAC
                and tsx.statusCode in (401, 407)
                and tsx.state == pj.PJSIP_TSX_STATE_TERMINATED
            ):
                # pjsua answers the challenge with a new transaction.
                emit("challenged", method=tsx.method, code=tsx.statusCode)
            self.saw_bye(tsx)
        except Exception:
            self.state.fail("onCallTsxState: " + traceback.format_exc())

    def onCallMediaState(self, prm):
        try:
            ci = self.getInfo()
            names = {
                pj.PJSUA_CALL_MEDIA_NONE: "none",
                pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
                pj.PJSUA_CALL_MEDIA_ERROR: "error",
            }
            for mi in ci.media:
                if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                emit("media", index=mi.index, status=names.get(mi.status, str(mi.status)))
                if mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    # Audio both ways through the null device.
                    audio = self.getAudioMedia(mi.index)
                    devices = pj.Endpoint.instance().audDevManager()
                    audio.startTransmit(devices.getPlaybackDevMedia())
                    devices.getCaptureDevMedia().startTransmit(audio)
        except Exception:
            self.state.fail("onCallMediaState: " + traceback.format_exc())


class Endpoint(pj.Endpoint):
    """Reports the TLS connections: protocol, cipher, verification."""

    def onTransportState(self, prm):
        try:
            tls = prm.tlsInfo
            if prm.state == pj.PJSIP_TP_STATE_CONNECTED and not tls.isEmpty():
                # pjsua reports the protocols it offered (a mask), not
                # the one agreed; the cipher's name tells that.
                names = {
                    pj.PJ_SSL_SOCK_PROTO_TLS1: "TLSv1",
                    pj.PJ_SSL_SOCK_PROTO_TLS1_1: "TLSv1.1",
                    pj.PJ_SSL_SOCK_PROTO_TLS1_2: "TLSv1.2",
                    pj.PJ_SSL_SOCK_PROTO_TLS1_3: "TLSv1.3",
                }
                emit(
                    "tls",
                    state="connected",
                    remote=tls.remoteAddr,
                    offered=[n for bit, n in names.items() if tls.protocol & bit],
                    cipher=tls.cipherName,
                    verified=tls.verifyStatus == 0,
                )
            elif prm.state == pj.PJSIP_TP_STATE_DISCONNECTED:
                emit("tls", state="disconnected", error=prm.lastError)
        except Exception:
            emit("error", message="onTransportState: " + traceback.format_exc())


class Account(pj.Account):
    def __init__(self, state):
        pj.Account.__init__(self)
        self.state = state

    def onRegState(self, prm):
        try:
            if self.state.registered or prm.code < 200:
                return  # an unregistration at the end, or not final yet
            emit("registered", code=prm.code, reason=prm.reason)
            if prm.code // 100 == 2:
                self.state.registered = True
            else:
                self.state.fail(f"registration refused: {prm.code} {prm.reason}")
        except Exception:
            self.state.fail("onRegState: " + traceback.format_exc())

    def onIncomingCall(self, prm):
        try:
            call = Call(self, self.state, prm.callId)
            self.state.calls.append(call)
            ci = call.getInfo()
            emit("incoming", remote=ci.remoteUri)
            if self.state.mode != "answer" or len(self.state.calls) > 1:
                op = pj.CallOpParam()
                op.statusCode = pj.PJSIP_SC_BUSY_HERE
                call.hangup(op)
                return
            op = pj.CallOpParam()
            op.statusCode = pj.PJSIP_SC_OK
            call.answer(op)
        except Exception:
            self.state.fail("onIncomingCall: " + traceback.format_exc())


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--user", required=True, help="user name, e.g. alice")
    p.add_argument("--password", required=True)
    p.add_argument(
        "--domain",
        required=True,
        help="the SIP domain, HOST or HOST:PORT (the address of record is sip:USER@DOMAIN)",
    )
    p.add_argument(
        "--proxy",
        required=True,
        help="wisp's TLS listener, HOST:PORT: registrar and outbound proxy",
    )
    p.add_argument("--ca", required=True, help="CA certificates (PEM) to verify wisp with")
    p.add_argument("--cert", help="this UA's certificate (PEM), for its TLS listener")
    p.add_argument("--key", help="its private key (PEM)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (SIP and RTP)")
    p.add_argument("--port", type=int, default=0, help="TLS listening port; 0: any")
    p.add_argument("--rtp-port", type=int, default=0, help="first RTP port; 0: pjsua's default")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--call", metavar="URI", help="call URI once registered")
    mode.add_argument(
        "--answer", action="store_true", help="answer one call (200) and wait for its BYE"
    )
    p.add_argument(
        "--hangup-after",
        type=int,
        default=1000,
        metavar="MS",
        help="with --call: hang up this long after the call is confirmed",
    )
    p.add_argument("--timeout", type=float, default=20.0, help="overall timeout, seconds")
    p.add_argument("--log-level", type=int, default=3, help="PJSIP log level on stderr (0-6)")
    return p.parse_args()


def main():
    args = parse_args()
    # PJSIP reads these files at each TLS connection, and a missing one
    # shows there only as "No such file or directory": say which, now.
    for path in (args.ca, args.cert, args.key):
        if path and not os.path.isfile(path):
            emit("error", message=f"no such file: {path}")
            emit("done", ok=False)
            return 1
    state = State("call" if args.call else "answer")
    deadline = time.monotonic() + args.timeout

    ep = Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.userAgent = "wisp-tests pjsua2 " + ep.libVersion().full
    cfg.logConfig.level = args.log_level
    cfg.logConfig.consoleLevel = args.log_level
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.noVad = True
    ep.libInit(cfg)

    tc = pj.TransportConfig()
    tc.boundAddress = args.bind
    tc.port = args.port
    tls = tc.tlsConfig
    tls.CaListFile = args.ca
    tls.verifyServer = True
    if args.cert:
        tls.certFile = args.cert
        tls.privKeyFile = args.key or ""
    transport = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc)
    ep.libStart()
    ep.audDevManager().setNullDev()
    local = ep.transportGetInfo(transport).localName
    emit("listening", port=int(local.rsplit(":", 1)[-1]), pjsip=ep.libVersion().full)

    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = f"sip:{args.user}@{args.domain}"
    acc_cfg.regConfig.registrarUri = f"sip:{args.proxy};transport=tls"
    acc_cfg.regConfig.timeoutSec = 300
    acc_cfg.sipConfig.proxies.append(f"sip:{args.proxy};transport=tls;lr")
    acc_cfg.sipConfig.transportId = transport
    acc_cfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
    )
    acc_cfg.mediaConfig.transportConfig.boundAddress = args.bind
    if args.rtp_port:
        acc_cfg.mediaConfig.transportConfig.port = args.rtp_port
    acc = Account(state)
    acc.create(acc_cfg)

    call = None
    while not state.done() and time.monotonic() < deadline:
        ep.libHandleEvents(20)
        if state.mode == "call" and state.registered and call is None:
            call = Call(acc, state)
            state.calls.append(call)
            call.makeCall(args.call, pj.CallOpParam(True))
        if (
            call is not None
            and state.confirmed_at is not None
            and not state.hung_up
            and time.monotonic() - state.confirmed_at >= args.hangup_after / 1000
        ):
            state.hung_up = True
            call.hangup(pj.CallOpParam())

    timed_out = not state.done()
    if timed_out:
        emit("error", message=f"timeout after {args.timeout} s")
    elif state.failed is None:
        expected = "sent" if state.mode == "call" else "received"
        if state.bye != expected:
            state.fail(f"expected a BYE {expected}, got {state.bye}")
        elif state.bye_code != 200:
            state.fail(f"the BYE was answered {state.bye_code}")
    ok = not timed_out and state.failed is None
    emit("done", ok=ok)

    # A moment for the last responses (200 to the BYE) to leave, then a
    # clean shutdown: unregistration, transports closed.
    until = time.monotonic() + 0.2
    while time.monotonic() < until:
        ep.libHandleEvents(20)
    state.calls.clear()
    del call
    acc.shutdown()
    del acc
    ep.libDestroy()
    del ep
    return 2 if timed_out else (0 if ok else 1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except pj.Error as err:
        emit("error", message=f"pjsua2: {err.info()}")
        emit("done", ok=False)
        sys.exit(1)
