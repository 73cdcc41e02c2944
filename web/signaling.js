// The signaling client: turnpike's /ws protocol v1.1, as docs/signaling.md
// describes it, written to be read next to that page. It knows nothing of
// WebRTC or of the page: it joins a room, hands the page every server
// message in order, sends what the page gives it, and keeps the session
// alive across a network blip.
//
// Its contract, with the parts of docs/signaling.md they come from:
//
// - join(room, name) opens ws[s]://<this host>/ws (with the page's
//   ?token=…, "Transport") and sends, as its first frame,
//   {type: 'join', room, name, resume: true, iceRefresh: true}: it asks for
//   both v1.1 additions. Nothing else may be sent until `joined` (the
//   page has nothing to send before it: its peers come from `joined`).
// - Every server message is handed to the page in the order read:
//   `joined` to on.joined, fresh credentials (`ice-servers`, "Fresh TURN
//   credentials") to on.iceServers, and the rest (peer-joined, peer-left,
//   signal, pong, error, anything unknown) to on.message. `resumed` and the
//   error `resume-failed` are handled here (see below) and then reported.
// - send(message) / signal(to, data): at most SEND_RATE frames a second
//   (bursts of SEND_BURST), below the server's 50 (bursts of 100), so the
//   page is never `rate-limited`; the rest waits in an outbox.
// - Counting ("Resume: counting"): from `joined` on, `rx` counts every
//   message read except `resumed`, and `tx` every frame written; the last
//   TX_LOG_MAX written frames are kept for a resend. An `ack` of `rx` goes
//   out every ACK_INTERVAL_MS when it moved.
// - A drop ("When the socket drops"): a socket that closes while joined
//   with a resume token is replaced: new sockets are tried after
//   RECONNECT_DELAYS_MS (the last one repeated) until one second before
//   the grace period ends, and the first frame of each is
//   {type: 'resume', token, last: rx}. Meanwhile send() queues (at most
//   OUTBOX_MAX frames). On `resumed` the client keeps counting from `last`,
//   resends the frames the server did not read (those after `received`)
//   and then the queued ones, takes the new token, and calls on.resumed;
//   the replayed messages follow as ordinary ones. On `resume-failed` it
//   calls on.resumeFailed and joins the same room again (a new `joined`,
//   a new id, follows).
// - close() leaves: a `leave` first if joined (so the room does not wait
//   out a grace period), then a close frame 1000. The server pings; the
//   browser answers by itself.
// - A session that ends otherwise is reported once to on.closed(why,
//   reason), the client already closed: why is 'unreachable' (the socket
//   closed before `joined`), 'lost' (it closed while joined, no resume
//   token), 'gave-up' (no resume within the grace period) or 'dropped' (a
//   resumed socket closed with no resume possible).
//
// The callbacks (all optional): on.open() (the socket is open, `join` is
// being sent), on.joined(msg), on.message(msg), on.iceServers(list),
// on.reconnecting(graceSeconds), on.resumed(msg), on.resumeFailed(text),
// on.closed(why, reason). An exception in a callback run for a server
// message is logged ("error handling …"), and the next message is read.

import { describeError, log } from './log.js';

// The server allows 50 messages/s (bursts of 100); stay well below.
const SEND_RATE = 25;
const SEND_BURST = 40;
// Frames kept for a resend, messages queued while the socket is down, and
// the waits between reconnection attempts.
const TX_LOG_MAX = 256;
const OUTBOX_MAX = 500;
const RECONNECT_DELAYS_MS = [200, 500, 1000, 2000, 3000];
const ACK_INTERVAL_MS = 5000;

// ws[s]://<host>/ws, with `token` (the page's ?token=…) if there is one.
export function signalingUrl(token) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = `${scheme}//${location.host}/ws`;
  if (token) url += `?token=${encodeURIComponent(token)}`;
  return url;
}

export class SignalingClient {
  constructor({ url, on = {} }) {
    this.url = url;
    this.on = on;
    // closed | joining (socket opening or `join` sent) | joined
    this.phase = 'closed';
    this.ws = null;
    this.room = null;
    this.name = '';
    // v1.1 resume: {token, grace} from joined/resumed, messages read and
    // frames sent since joined, whether the socket is being replaced.
    this.resume = null;
    this.rx = 0;
    this.acked = 0;
    this.tx = 0;
    this.txLog = [];
    this.counting = false;
    this.reconnecting = false;
    this.resumes = 0;
    this.outbox = [];
    this.tokens = SEND_BURST;
    this.lastRefill = performance.now();
    this.drainTimer = null;
    this.ackTimer = null;
    // Bumped by join and close, so the callbacks of an old socket stop.
    this.generation = 0;
  }

  // Opens a socket and joins `room` as `name` on it. Throws if the
  // WebSocket cannot even be created (a bad URL, a blocked port).
  join(room, name) {
    const generation = ++this.generation;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.phase = 'joining';
    this.room = room;
    this.name = name;
    this.outbox.length = 0;
    ws.onopen = () => {
      if (this.ws !== ws || generation !== this.generation) return;
      this.#emit('open');
      this.#sendJoin();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.#onFrame(ev.data);
    };
    ws.onerror = () => log('websocket error');
    ws.onclose = (ev) => {
      if (this.ws !== ws) return; // closed by us
      log('websocket closed', ev.code, ev.reason || '');
      if (this.phase === 'joined' && this.resume) {
        this.#startReconnect();
        return;
      }
      this.#end(this.phase === 'joined' ? 'lost' : 'unreachable', ev.reason || '');
    };
  }

  signal(to, data) {
    this.send({ type: 'signal', to, data });
  }

  send(message) {
    const ws = this.ws;
    const resumable = this.phase === 'joined' && this.resume;
    if (this.reconnecting || (resumable && (!ws || ws.readyState !== WebSocket.OPEN))) {
      // Sent once the session is resumed (the socket may be closing
      // before the page is told).
      if (this.outbox.length < OUTBOX_MAX) this.outbox.push(JSON.stringify(message));
      else log('not sent (outbox full while reconnecting)', message.type);
      return;
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      log('not sent (socket not open)', message.type);
      return;
    }
    this.outbox.push(JSON.stringify(message));
    this.#drain();
  }

  // Leaves the room and closes the socket; the client may join again.
  close() {
    this.generation += 1;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN && this.phase === 'joined' && !this.reconnecting) {
      // A leave, so the room does not wait out a resume grace period.
      try {
        ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        // the socket is closing anyway
      }
    }
    this.phase = 'closed';
    this.reconnecting = false;
    this.resume = null;
    this.counting = false;
    clearInterval(this.ackTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'leaving');
      } catch {
        // already closed
      }
    }
    this.outbox.length = 0;
  }

  #emit(name, ...args) {
    const handler = this.on[name];
    if (handler) handler(...args);
  }

  #end(why, reason) {
    this.close();
    this.#emit('closed', why, reason);
  }

  #sendJoin() {
    this.counting = false;
    this.rx = 0;
    this.tx = 0;
    this.acked = 0;
    this.txLog = [];
    this.send({ type: 'join', room: this.room, name: this.name || undefined, resume: true, iceRefresh: true });
  }

  // Writes one frame; after joined, it is numbered and kept for a resend
  // (the server reports in `resumed` how many it read).
  #write(ws, text) {
    ws.send(text);
    if (!this.counting) return;
    this.tx += 1;
    this.txLog.push({ n: this.tx, text });
    if (this.txLog.length > TX_LOG_MAX) this.txLog.shift();
  }

  #drain() {
    const now = performance.now();
    this.tokens = Math.min(SEND_BURST, this.tokens + ((now - this.lastRefill) / 1000) * SEND_RATE);
    this.lastRefill = now;
    const ws = this.ws;
    if (this.reconnecting) return;
    while (this.outbox.length > 0 && this.tokens >= 1 && ws && ws.readyState === WebSocket.OPEN) {
      this.#write(ws, this.outbox.shift());
      this.tokens -= 1;
    }
    if (this.outbox.length > 0 && !this.drainTimer && ws && ws.readyState === WebSocket.OPEN) {
      this.drainTimer = setTimeout(() => {
        this.drainTimer = null;
        this.#drain();
      }, 1000 / SEND_RATE);
    }
  }

  #onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      log('ignored a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    // v1.1: the count is what a resume says was read.
    if (this.counting && msg.type !== 'joined' && msg.type !== 'resumed') this.rx += 1;
    try {
      this.#onMessage(msg);
    } catch (e) {
      log('error handling', msg.type, describeError(e));
    }
  }

  #onMessage(msg) {
    switch (msg.type) {
      case 'joined':
        this.#onJoined(msg);
        break;
      case 'resumed':
        this.#onResumed(msg);
        break;
      case 'ice-servers':
        if (Array.isArray(msg.iceServers)) this.#emit('iceServers', msg.iceServers);
        break;
      case 'error':
        if (msg.code === 'resume-failed') {
          const text = String(msg.message || '');
          log('server error', msg.code, text);
          this.#onResumeFailed(text);
        } else {
          this.#emit('message', msg);
        }
        break;
      default:
        this.#emit('message', msg);
    }
  }

  #onJoined(msg) {
    if (this.phase !== 'joining') return;
    this.phase = 'joined';
    this.room = msg.room;
    this.resume = msg.resume && msg.resume.token ? msg.resume : null;
    this.counting = true;
    this.rx = 0;
    clearInterval(this.ackTimer);
    this.ackTimer = setInterval(() => {
      if (this.counting && !this.reconnecting && this.resume && this.rx > this.acked) {
        this.acked = this.rx;
        this.send({ type: 'ack', seq: this.rx });
      }
    }, ACK_INTERVAL_MS);
    this.#emit('joined', msg);
  }

  // The socket dropped while in a call: resume the session on a new
  // socket, within the grace period the server granted.
  #startReconnect() {
    const generation = this.generation;
    this.reconnecting = true;
    this.counting = false;
    const deadline = Date.now() + Math.max(1, this.resume.grace - 1) * 1000;
    this.#emit('reconnecting', this.resume.grace);
    log('reconnecting; resume grace', this.resume.grace, 's');
    let attempt = 0;
    const retry = () => setTimeout(tryOnce, RECONNECT_DELAYS_MS[Math.min(attempt++, RECONNECT_DELAYS_MS.length - 1)]);
    const tryOnce = () => {
      if (generation !== this.generation || !this.reconnecting) return;
      if (Date.now() > deadline) {
        log('gave up reconnecting');
        this.#end('gave-up', '');
        return;
      }
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        log('reconnect failed', describeError(e));
        retry();
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        if (this.ws !== ws || generation !== this.generation) return;
        log('reconnected; resuming after', this.rx, 'messages');
        ws.send(JSON.stringify({ type: 'resume', token: this.resume.token, last: this.rx }));
      };
      ws.onmessage = (ev) => {
        if (this.ws === ws) this.#onFrame(ev.data);
      };
      ws.onerror = () => log('websocket error (reconnecting)');
      ws.onclose = (ev) => {
        if (this.ws !== ws || generation !== this.generation) return;
        log('websocket closed', ev.code, ev.reason || '');
        if (this.reconnecting) {
          retry();
        } else if (this.phase === 'joined' && this.resume) {
          this.#startReconnect();
        } else {
          this.#end('dropped', ev.reason || '');
        }
      };
    };
    retry();
  }

  #onResumed(msg) {
    if (!this.reconnecting) return;
    this.reconnecting = false;
    this.resume = msg.resume || null;
    this.resumes += 1;
    // Resend what the server did not read, then what waited meanwhile.
    const received = Number(msg.received) || 0;
    const unread = this.txLog.filter((e) => e.n > received).map((e) => e.text);
    this.txLog = [];
    this.tx = received;
    this.counting = true;
    this.outbox.unshift(...unread);
    log('resumed as', msg.id, '; resending', unread.length, 'frames, then', this.outbox.length - unread.length, 'queued');
    this.#drain();
    this.#emit('resumed', msg);
  }

  // A resume that the server refused: start over in the same room.
  #onResumeFailed(text) {
    log('resume refused', text);
    this.reconnecting = false;
    this.resume = null;
    this.#emit('resumeFailed', text);
    this.phase = 'joining';
    this.outbox.length = 0;
    this.#sendJoin();
  }
}
