#!/usr/bin/env node
// A command-line JsSIP user agent over SIP-over-WebSocket (RFC 7118) for
// wisp's integration tests: node 20, JsSIP 3.x, the `ws` package as the
// WebSocket implementation (node 20 has no global WebSocket).
//
// Media is FAKED: node has no WebRTC, so this file installs a minimal stand-in
// RTCPeerConnection / RTCSessionDescription / MediaStream before JsSIP sees
// them. createOffer/createAnswer return a plain SDP with one `m=audio` line on
// 127.0.0.1 with PCMU (payload type 0), ICE gathering is 'complete' at once
// (and an end-of-candidates icecandidate event with a null candidate is fired),
// and no RTP is ever sent or received. Only the SIP signalling is real. A
// `mediaStream` with one fake audio track is passed to call()/answer(), so
// JsSIP never calls navigator.mediaDevices.getUserMedia().
//
// Usage (all options are `--key value`, flags take no value):
//   node ua.js --ws ws://127.0.0.1:5066 --uri sip:alice@example.test
//              [--password P] [--auth-user U] [--display-name N]
//              [--register] [--expires 600] [--unregister-at-end]
//              [--call sip:bob@example.test] [--answer] [--answer-count 1]
//              [--hangup-after MS] [--message sip:bob@example.test --text T]
//              [--wait-message] [--no-session-timers]
//              [--ca FILE] [--insecure] [--trace] [--timeout MS]
//
//   --ws URL            ws:// or wss:// URL of the proxy (subprotocol "sip").
//   --uri AOR           the UA's identity (From, To of REGISTER, digest user).
//   --password P        digest password (JsSIP answers 401/407 by itself).
//   --auth-user U       digest user name if not the AOR's user part.
//   --register          REGISTER on connect (Expires --expires, default 600)
//                       and wait for "registered" before calling/messaging.
//   --unregister-at-end un-REGISTER when everything else is done and wait for
//                       its final response ("unregistered"). Without it,
//                       ua.stop() still sends an un-REGISTER (JsSIP always
//                       does when registered) but nobody waits for it.
//   --call URI          make one call (after registering, or on connect).
//   --answer            answer incoming calls with 200 (fake SDP answer);
//                       without it incoming calls are rejected with 486.
//   --answer-count N    how many answered calls to wait for (default 1).
//   --hangup-after MS   send BYE MS after the call is confirmed (and wait for
//                       the BYE's final response); else wait for the remote BYE.
//   --message URI --text T  send one MESSAGE (text/plain).
//   --wait-message      wait for one incoming MESSAGE (replied 200 by JsSIP).
//   --no-session-timers no Session-Expires / Supported: timer in INVITEs.
//   --ca FILE           trust this CA (PEM) for wss:// (NODE_EXTRA_CA_CERTS
//                       works as well: ws uses node's default trust store).
//   --insecure          do not verify the wss:// server certificate.
//   --trace             also print every SIP message sent and received
//                       ("sip-out"/"sip-in" events with the raw text).
//   --timeout MS        overall limit (default 30000); exit code 2 on timeout.
//
// Output: one JSON object per line on stdout, each with an "event" field:
// connected, disconnected, ws-error, register-response, registered,
// registrationFailed, unregistered, calling, incoming, progress, accepted,
// confirmed, ended, failed, bye-response, message-sent, message-failed,
// newMessage, sip-in, sip-out (--trace), error, timeout, done (printed when
// the outcome is known, with the exit code; the un-REGISTER and disconnection
// of ua.stop() may still be reported after it). Exit code: 0 when everything asked for succeeded (registered, every
// call confirmed and ended by a BYE -- with a 2xx to our own BYE when this
// side hung up --, MESSAGE answered 2xx, ...), 1 otherwise, 2 on timeout.
// The UA is always stopped (ua.stop()) before exiting. JsSIP's own debug log
// goes to stderr with DEBUG='JsSIP:*'.
'use strict';

const fs = require('fs');
const crypto = require('crypto');

// ---------------------------------------------------------------- arguments

const FLAGS = new Set([
  'register',
  'answer',
  'unregister-at-end',
  'wait-message',
  'no-session-timers',
  'insecure',
  'trace',
  'help',
]);

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      throw new Error(`unexpected argument: ${a}`);
    }
    const key = a.slice(2);
    if (FLAGS.has(key)) {
      args[key] = true;
    } else {
      if (i + 1 >= argv.length) {
        throw new Error(`option --${key} needs a value`);
      }
      args[key] = argv[++i];
    }
  }
  return args;
}

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (e) {
  out({ event: 'error', message: e.message });
  process.exit(1);
}
if (args.help) {
  const src = fs.readFileSync(__filename, 'utf8').split('\n');
  process.stdout.write(`${src.slice(1, src.findIndex(l => l.startsWith("'use strict'"))).map(l => l.replace(/^\/\/ ?/, '')).join('\n')}\n`);
  process.exit(0);
}
for (const required of ['ws', 'uri']) {
  if (!args[required]) {
    out({ event: 'error', message: `--${required} is required` });
    process.exit(1);
  }
}
if (args.message && args.text === undefined) {
  out({ event: 'error', message: '--message needs --text' });
  process.exit(1);
}
const TIMEOUT_MS = Number(args.timeout || 30000);
const HANGUP_AFTER = args['hangup-after'] !== undefined ? Number(args['hangup-after']) : null;
const ANSWER_COUNT = args.answer ? Number(args['answer-count'] || 1) : 0;

// ---------------------------------------------------------------- WebSocket

const WS = require('ws');

const wsOptions = {};
if (args.ca) {
  wsOptions.ca = fs.readFileSync(args.ca);
}
if (args.insecure) {
  wsOptions.rejectUnauthorized = false;
}

// Raw SIP seen on the socket: used for --trace and to learn the final
// response to our own BYE (JsSIP fires "ended" before it arrives).
const byeResponses = new Map(); // Call-ID -> status code
const byeWaiters = new Map(); // Call-ID -> [resolve]

function headerValue(raw, name, compact) {
  const re = new RegExp(`^(?:${name}${compact ? `|${compact}` : ''})[ \\t]*:[ \\t]*(.*)$`, 'im');
  const m = re.exec(raw);
  return m ? m[1].trim() : null;
}

function tap(direction, data) {
  const raw = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
  if (raw.trim() === '') {
    return; // CRLF keep-alive
  }
  const firstLine = raw.split(/\r?\n/, 1)[0];
  if (args.trace) {
    out({ event: direction === 'in' ? 'sip-in' : 'sip-out', first_line: firstLine, raw });
  }
  if (direction === 'in') {
    const status = /^SIP\/2\.0 (\d{3})/.exec(firstLine);
    const cseq = headerValue(raw, 'CSeq');
    if (status && cseq && /\sREGISTER$/i.test(cseq) && Number(status[1]) >= 200) {
      // JsSIP silently ignores a 2xx whose Contacts do not include its own
      // (Registrator.js); this makes such a reply visible.
      const contacts = [];
      const re = /^(?:Contact|m)[ \t]*:[ \t]*(.*)$/gim;
      let m;
      while ((m = re.exec(raw.split(/\r?\n\r?\n/, 1)[0])) !== null) {
        contacts.push(m[1].trim());
      }
      out({ event: 'register-response', status_code: Number(status[1]), cseq, contacts });
    }
    if (status && cseq && /\sBYE$/i.test(cseq)) {
      const code = Number(status[1]);
      if (code >= 200) {
        const callId = headerValue(raw, 'Call-ID', 'i');
        if (!byeResponses.has(callId)) {
          byeResponses.set(callId, code);
          out({ event: 'bye-response', call_id: callId, status_code: code });
          for (const resolve of byeWaiters.get(callId) || []) {
            resolve(code);
          }
          byeWaiters.delete(callId);
        }
      }
    }
  }
}

function waitByeResponse(callId) {
  if (byeResponses.has(callId)) {
    return Promise.resolve(byeResponses.get(callId));
  }
  return new Promise(resolve => {
    if (!byeWaiters.has(callId)) {
      byeWaiters.set(callId, []);
    }
    byeWaiters.get(callId).push(resolve);
  });
}

// JsSIP's WebSocketInterface does `new WebSocket(url, 'sip')` on the global.
class TestWebSocket extends WS {
  constructor(url, protocols) {
    super(url, protocols, wsOptions);
    this.on('message', data => tap('in', data));
    // JsSIP's onerror only logs (to stderr with DEBUG); report the reason
    // (TLS failure, refused connection, missing "sip" subprotocol, HTTP
    // status of a refused upgrade...). Also makes sure no error is unhandled.
    this.on('error', e => out({ event: 'ws-error', message: String((e && e.message) || e) }));
  }

  send(data, ...rest) {
    tap('out', data);
    return super.send(data, ...rest);
  }
}
globalThis.WebSocket = TestWebSocket;

// ---------------------------------------------------------------- fake media

function randomId() {
  return crypto.randomBytes(8).toString('hex');
}

class FakeMediaStreamTrack extends EventTarget {
  constructor(kind) {
    super();
    this.kind = kind;
    this.id = randomId();
    this.label = `fake ${kind}`;
    this.enabled = true;
    this.muted = false;
    this.readyState = 'live';
  }

  stop() {
    this.readyState = 'ended';
  }

  clone() {
    return new FakeMediaStreamTrack(this.kind);
  }

  getSettings() {
    return {};
  }

  getConstraints() {
    return {};
  }

  applyConstraints() {
    return Promise.resolve();
  }
}

class FakeMediaStream extends EventTarget {
  constructor(tracks = []) {
    super();
    this.id = randomId();
    this._tracks = Array.isArray(tracks) ? tracks.slice() : tracks.getTracks();
  }

  get active() {
    return this._tracks.some(t => t.readyState === 'live');
  }

  getTracks() {
    return this._tracks.slice();
  }

  getAudioTracks() {
    return this._tracks.filter(t => t.kind === 'audio');
  }

  getVideoTracks() {
    return this._tracks.filter(t => t.kind === 'video');
  }

  getTrackById(id) {
    return this._tracks.find(t => t.id === id) || null;
  }

  addTrack(track) {
    if (!this._tracks.includes(track)) {
      this._tracks.push(track);
    }
  }

  removeTrack(track) {
    this._tracks = this._tracks.filter(t => t !== track);
  }

  clone() {
    return new FakeMediaStream(this._tracks.map(t => t.clone()));
  }
}

class FakeRTCSessionDescription {
  constructor(init = {}) {
    this.type = init.type;
    this.sdp = init.sdp || '';
  }

  toJSON() {
    return { type: this.type, sdp: this.sdp };
  }
}

function invalidState(message) {
  const e = new Error(message);
  e.name = 'InvalidStateError';
  return e;
}

// SDP direction seen from the other side.
const REVERSE_DIRECTION = {
  sendrecv: 'sendrecv',
  sendonly: 'recvonly',
  recvonly: 'sendonly',
  inactive: 'inactive',
};

class FakeRTCPeerConnection extends EventTarget {
  constructor(configuration = {}) {
    super();
    this._configuration = configuration;
    this.signalingState = 'stable';
    this.iceGatheringState = 'new';
    this.iceConnectionState = 'new';
    this.connectionState = 'new';
    this.localDescription = null;
    this.remoteDescription = null;
    this.currentLocalDescription = null;
    this.currentRemoteDescription = null;
    this.pendingLocalDescription = null;
    this.pendingRemoteDescription = null;
    this._senders = [];
    this._sessionId = String(Math.floor(Math.random() * 1e12));
    this._version = 0;
    this._port = 20000 + 2 * Math.floor(Math.random() * 10000);
  }

  getConfiguration() {
    return this._configuration;
  }

  setConfiguration(configuration) {
    this._configuration = configuration;
  }

  _fire(type, props = {}) {
    const event = new Event(type);
    Object.assign(event, props);
    this.dispatchEvent(event);
    const handler = this[`on${type}`];
    if (typeof handler === 'function') {
      handler.call(this, event);
    }
  }

  _setSignalingState(state) {
    if (this.signalingState !== state) {
      this.signalingState = state;
      setImmediate(() => this._fire('signalingstatechange'));
    }
  }

  _sdp(mediaLines) {
    this._version += 1;
    return [
      'v=0',
      `o=- ${this._sessionId} ${this._version} IN IP4 127.0.0.1`,
      's=-',
      'c=IN IP4 127.0.0.1',
      't=0 0',
      ...mediaLines,
      '',
    ].join('\r\n');
  }

  _audioLines(direction = 'sendrecv') {
    return [`m=audio ${this._port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', 'a=ptime:20', `a=${direction}`];
  }

  createOffer() {
    if (this.signalingState === 'closed') {
      return Promise.reject(invalidState('RTCPeerConnection is closed'));
    }
    return Promise.resolve(new FakeRTCSessionDescription({ type: 'offer', sdp: this._sdp(this._audioLines()) }));
  }

  createAnswer() {
    if (this.signalingState === 'closed') {
      return Promise.reject(invalidState('RTCPeerConnection is closed'));
    }
    if (this.signalingState !== 'have-remote-offer' || !this.remoteDescription) {
      return Promise.reject(invalidState(`createAnswer() in signaling state ${this.signalingState}`));
    }
    // Answer each m= line of the offer: audio with PCMU if offered, anything
    // else (or audio without PCMU) rejected with port 0.
    const lines = [];
    const sections = this.remoteDescription.sdp.split(/\r?\n(?=m=)/).slice(1);
    for (const section of sections) {
      const mline = section.split(/\r?\n/, 1)[0];
      const [mtype, , proto, ...fmts] = mline.trim().split(/\s+/);
      const media = mtype.slice(2);
      const dir = (/^a=(sendrecv|sendonly|recvonly|inactive)\s*$/m.exec(section) || [, 'sendrecv'])[1];
      if (media === 'audio' && /^RTP\/AVP$/i.test(proto) && fmts.includes('0')) {
        lines.push(...this._audioLines(REVERSE_DIRECTION[dir]));
      } else {
        lines.push(`m=${media} 0 ${proto} ${fmts[0] || '0'}`);
      }
    }
    return Promise.resolve(new FakeRTCSessionDescription({ type: 'answer', sdp: this._sdp(lines) }));
  }

  setLocalDescription(description) {
    if (this.signalingState === 'closed') {
      return Promise.reject(invalidState('RTCPeerConnection is closed'));
    }
    const implicit = !description || !description.sdp;
    const make = implicit
      ? this.signalingState === 'have-remote-offer'
        ? this.createAnswer()
        : this.createOffer()
      : Promise.resolve(new FakeRTCSessionDescription(description));
    return make.then(desc => {
      if (desc.type === 'offer') {
        this._setSignalingState('have-local-offer');
        this.pendingLocalDescription = desc;
      } else if (desc.type === 'answer' || desc.type === 'pranswer') {
        if (this.signalingState !== 'have-remote-offer' && this.signalingState !== 'have-local-pranswer') {
          throw invalidState(`setLocalDescription(answer) in signaling state ${this.signalingState}`);
        }
        this._setSignalingState(desc.type === 'answer' ? 'stable' : 'have-local-pranswer');
        this.currentLocalDescription = desc;
        this.currentRemoteDescription = this.remoteDescription;
        this.pendingLocalDescription = null;
        this.pendingRemoteDescription = null;
      }
      this.localDescription = desc;
      // No real ICE: gathering is complete at once (JsSIP then uses the SDP
      // as it is). Still announce the end of candidates like a browser does.
      if (this.iceGatheringState !== 'complete') {
        this.iceGatheringState = 'complete';
        setImmediate(() => {
          this._fire('icegatheringstatechange');
          this._fire('icecandidate', { candidate: null });
        });
      }
      this._maybeConnected();
    });
  }

  setRemoteDescription(description) {
    if (this.signalingState === 'closed') {
      return Promise.reject(invalidState('RTCPeerConnection is closed'));
    }
    const desc = new FakeRTCSessionDescription(description);
    if (!/^v=0/m.test(desc.sdp) || !/^m=/m.test(desc.sdp)) {
      const e = new Error('not an SDP with a media description');
      e.name = 'OperationError';
      return Promise.reject(e);
    }
    if (desc.type === 'offer') {
      if (this.signalingState !== 'stable' && this.signalingState !== 'have-remote-offer') {
        return Promise.reject(invalidState(`setRemoteDescription(offer) in signaling state ${this.signalingState}`));
      }
      this._setSignalingState('have-remote-offer');
      this.pendingRemoteDescription = desc;
    } else if (desc.type === 'answer' || desc.type === 'pranswer') {
      if (this.signalingState !== 'have-local-offer' && this.signalingState !== 'have-remote-pranswer') {
        return Promise.reject(invalidState(`setRemoteDescription(answer) in signaling state ${this.signalingState}`));
      }
      this._setSignalingState(desc.type === 'answer' ? 'stable' : 'have-remote-pranswer');
      if (desc.type === 'answer') {
        this.currentRemoteDescription = desc;
        this.currentLocalDescription = this.localDescription;
        this.pendingLocalDescription = null;
        this.pendingRemoteDescription = null;
      }
    }
    this.remoteDescription = desc;
    this._maybeConnected();
    return Promise.resolve();
  }

  _maybeConnected() {
    if (this.localDescription && this.remoteDescription && this.iceConnectionState === 'new') {
      this.iceConnectionState = 'connected';
      this.connectionState = 'connected';
      setImmediate(() => {
        this._fire('iceconnectionstatechange');
        this._fire('connectionstatechange');
      });
    }
  }

  addIceCandidate() {
    return Promise.resolve();
  }

  restartIce() {}

  addTrack(track, ...streams) {
    const sender = {
      track,
      streams,
      dtmf: null,
      replaceTrack: t => {
        sender.track = t;
        return Promise.resolve();
      },
      getParameters: () => ({ encodings: [] }),
      setParameters: () => Promise.resolve(),
      getStats: () => Promise.resolve(new Map()),
    };
    this._senders.push(sender);
    return sender;
  }

  removeTrack(sender) {
    this._senders = this._senders.filter(s => s !== sender);
  }

  getSenders() {
    return this._senders.slice();
  }

  getReceivers() {
    return [];
  }

  getTransceivers() {
    return [];
  }

  getLocalStreams() {
    return [];
  }

  getRemoteStreams() {
    return [];
  }

  getStats() {
    return Promise.resolve(new Map());
  }

  createDataChannel() {
    throw new Error('no data channels in the fake RTCPeerConnection');
  }

  close() {
    if (this.signalingState === 'closed') {
      return;
    }
    this.signalingState = 'closed';
    this.iceConnectionState = 'closed';
    this.connectionState = 'closed';
  }
}

// JsSIP tests `window.RTCPeerConnection` (UA.js, RTCSession.js) and uses the
// bare globals RTCPeerConnection and RTCSessionDescription.
globalThis.window = globalThis;
globalThis.RTCPeerConnection = FakeRTCPeerConnection;
globalThis.RTCSessionDescription = FakeRTCSessionDescription;
globalThis.MediaStream = FakeMediaStream;
globalThis.MediaStreamTrack = FakeMediaStreamTrack;

function fakeAudioStream() {
  return new FakeMediaStream([new FakeMediaStreamTrack('audio')]);
}

// ---------------------------------------------------------------- the UA

const JsSIP = require('jssip');

function allHeaders(message) {
  const headers = {};
  if (message && message.headers) {
    for (const name of Object.keys(message.headers)) {
      headers[name] = message.headers[name].map(h => h.raw);
    }
  }
  return headers;
}

function statusOf(message) {
  return message && message.status_code !== undefined ? message.status_code : null;
}

let ua;
let finishing = false;
const state = {
  registered: !args.register, // nothing to wait for when not asked to register
  outgoingDone: !args.call,
  answered: 0,
  messageDone: !args.message,
  messagesReceived: 0,
  actionsStarted: false,
};

function allDone() {
  return (
    state.registered &&
    state.outgoingDone &&
    state.answered >= ANSWER_COUNT &&
    state.messageDone &&
    state.messagesReceived >= (args['wait-message'] ? 1 : 0)
  );
}

function exitWith(code) {
  process.stdout.write('', () => process.exit(code));
}

// Stop the UA (JsSIP waits up to 2 s for pending transactions, e.g. an
// un-REGISTER or a BYE), then exit once the socket is down.
function finish(code, reason) {
  if (finishing) {
    return;
  }
  finishing = true;
  out({ event: 'done', code, reason });
  clearTimeout(overallTimer);
  if (!ua) {
    exitWith(code);
    return;
  }
  const hardExit = setTimeout(() => exitWith(code), 3000);
  ua.on('disconnected', () => {
    clearTimeout(hardExit);
    exitWith(code);
  });
  try {
    ua.stop();
  } catch (e) {
    out({ event: 'error', message: `ua.stop(): ${e.message}` });
  }
  if (!ua.isConnected()) {
    // Never connected or already down: no 'disconnected' will come.
    clearTimeout(hardExit);
    setTimeout(() => exitWith(code), 50);
  }
}

function fail(reason) {
  finish(1, reason);
}

let unregistering = false;
function checkDone() {
  if (finishing || unregistering || !allDone()) {
    return;
  }
  if (args['unregister-at-end'] && args.register) {
    unregistering = true;
    ua.unregister();
    return; // 'unregistered' finishes
  }
  finish(0, 'ok');
}

const overallTimer = setTimeout(() => {
  out({ event: 'timeout', after_ms: TIMEOUT_MS });
  finish(2, 'timeout');
}, TIMEOUT_MS);

process.on('uncaughtException', e => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  finish(1, 'exception');
});
process.on('unhandledRejection', e => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  finish(1, 'exception');
});

function watchSession(session, direction) {
  const callId = () => (session._request ? session._request.call_id : null);
  let hungUpLocally = false;
  const base = () => ({ direction, call_id: callId() });

  session.on('progress', e => {
    out({ event: 'progress', ...base(), originator: e.originator, status_code: statusOf(e.response) });
  });
  session.on('accepted', e => {
    out({ event: 'accepted', ...base(), originator: e.originator, status_code: statusOf(e.response) });
  });
  session.on('confirmed', e => {
    out({ event: 'confirmed', ...base(), originator: e.originator });
    if (HANGUP_AFTER !== null) {
      setTimeout(() => {
        if (!session.isEnded()) {
          hungUpLocally = true;
          session.terminate();
        }
      }, HANGUP_AFTER);
    }
  });
  session.on('ended', e => {
    out({
      event: 'ended',
      ...base(),
      originator: e.originator,
      cause: e.cause,
      status_code: statusOf(e.message),
    });
    const settle = ok => {
      if (direction === 'outgoing') {
        if (!ok) {
          fail(`call ended: ${e.cause}`);
          return;
        }
        state.outgoingDone = true;
      } else if (ok) {
        state.answered += 1;
      } else {
        fail(`call ended: ${e.cause}`);
        return;
      }
      checkDone();
    };
    if (e.cause !== JsSIP.C.causes.BYE) {
      settle(false);
    } else if (e.originator === 'local' && hungUpLocally) {
      // Our BYE: wait for its final response.
      waitByeResponse(callId()).then(code => {
        if (code >= 200 && code < 300) {
          settle(true);
        } else {
          fail(`BYE answered ${code}`);
        }
      });
    } else {
      settle(true);
    }
  });
  session.on('failed', e => {
    out({
      event: 'failed',
      ...base(),
      originator: e.originator,
      cause: e.cause,
      status_code: statusOf(e.message),
      reason_phrase: e.message && e.message.reason_phrase !== undefined ? e.message.reason_phrase : null,
    });
    if (direction === 'outgoing' || args.answer) {
      fail(`call failed: ${e.cause}`);
    }
  });
}

function callOptions() {
  return {
    mediaStream: fakeAudioStream(),
    mediaConstraints: { audio: true, video: false },
    pcConfig: { iceServers: [] },
  };
}

function startActions() {
  if (state.actionsStarted || finishing) {
    return;
  }
  state.actionsStarted = true;
  if (args.call) {
    const session = ua.call(args.call, callOptions());
    watchSession(session, 'outgoing');
    out({ event: 'calling', target: args.call, call_id: session._request ? session._request.call_id : null });
  }
  if (args.message) {
    ua.sendMessage(args.message, args.text, {
      contentType: 'text/plain',
      eventHandlers: {
        succeeded: e => {
          out({ event: 'message-sent', target: args.message, status_code: statusOf(e.response) });
          state.messageDone = true;
          checkDone();
        },
        failed: e => {
          out({
            event: 'message-failed',
            target: args.message,
            originator: e.originator,
            cause: e.cause,
            status_code: statusOf(e.response),
          });
          fail(`message failed: ${e.cause}`);
        },
      },
    });
  }
  checkDone();
}

let socket;
try {
  socket = new JsSIP.WebSocketInterface(args.ws);
} catch (e) {
  out({ event: 'error', message: `--ws: ${e.message}` });
  process.exit(1);
}
const config = {
  sockets: [socket],
  uri: args.uri,
  register: !!args.register,
  register_expires: Number(args.expires || 600),
  session_timers: !args['no-session-timers'],
};
if (args.password !== undefined) {
  config.password = args.password;
}
if (args['auth-user']) {
  config.authorization_user = args['auth-user'];
}
if (args['display-name']) {
  config.display_name = args['display-name'];
}

try {
  ua = new JsSIP.UA(config);
} catch (e) {
  out({ event: 'error', message: `configuration: ${e.message} ${e.parameter || ''}`.trim() });
  finish(1, 'configuration');
}

if (ua) {
  let connected = true; // so that a first failed connection is reported
  ua.on('connected', () => {
    connected = true;
    out({ event: 'connected', url: args.ws, via_transport: socket.via_transport });
    if (!args.register) {
      startActions();
    }
  });
  ua.on('disconnected', e => {
    if (!connected) {
      return; // ua.stop() reports the same disconnection a second time
    }
    connected = false;
    out({ event: 'disconnected', error: !!e.error, code: e.code === undefined ? null : e.code, reason: e.reason || '' });
    if (!finishing) {
      fail('disconnected');
    }
  });
  ua.on('registered', e => {
    const response = e.response;
    out({
      event: 'registered',
      status_code: statusOf(response),
      contacts: response ? response.getHeaders('contact') : [],
      expires: response && response.hasHeader('expires') ? response.getHeader('expires') : null,
      contact_sent: ua.registrator()._contact,
      headers: allHeaders(response),
    });
    state.registered = true;
    startActions();
  });
  ua.on('registrationFailed', e => {
    out({
      event: 'registrationFailed',
      cause: e.cause,
      status_code: statusOf(e.response),
      reason_phrase: e.response ? e.response.reason_phrase : null,
    });
    fail(`registration failed: ${e.cause}`);
  });
  ua.on('unregistered', e => {
    const code = statusOf(e.response);
    out({ event: 'unregistered', cause: e.cause || null, status_code: code, contacts: e.response ? e.response.getHeaders('contact') : [] });
    if (unregistering) {
      if (code !== null && code >= 200 && code < 300) {
        finish(0, 'ok');
      } else {
        fail(`unregister failed: ${e.cause}`);
      }
    }
  });
  ua.on('newRTCSession', e => {
    if (e.originator !== 'remote') {
      return;
    }
    const session = e.session;
    const request = e.request;
    out({
      event: 'incoming',
      ruri: request.ruri ? request.ruri.toString() : null,
      from: request.from ? request.from.toString() : null,
      to: request.to ? request.to.toString() : null,
      call_id: request.call_id,
      contact: request.getHeader('contact') || null,
      record_route: request.getHeaders('record-route'),
      via: request.getHeaders('via'),
      headers: allHeaders(request),
      has_sdp: !!request.body,
    });
    watchSession(session, 'incoming');
    if (args.answer) {
      // Answer on the next tick: JsSIP sends its 180 right after this event.
      setImmediate(() => {
        if (!session.isEnded()) {
          session.answer(callOptions());
        }
      });
    } else {
      session.terminate({ status_code: 486 });
    }
  });
  ua.on('newMessage', e => {
    if (e.originator !== 'remote') {
      return;
    }
    const request = e.request;
    out({
      event: 'newMessage',
      from: request.from ? request.from.toString() : null,
      to: request.to ? request.to.toString() : null,
      ruri: request.ruri ? request.ruri.toString() : null,
      content_type: request.getHeader('content-type') || null,
      body: request.body || '',
      headers: allHeaders(request),
    });
    state.messagesReceived += 1;
    setImmediate(checkDone);
  });

  ua.start();
}
