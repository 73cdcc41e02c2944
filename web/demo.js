// turnpike call demo: a full-mesh WebRTC call signaled over this server's
// /ws endpoint, with ICE servers (STUN + TURN with fresh credentials)
// handed out by the server on join.
//
// Signaling rules: the newcomer offers to every peer listed in `joined`;
// peers already in the room only answer, so offers never cross. The
// `data` of a signal message is one of
//   {description: RTCSessionDescriptionInit}
//   {candidate: RTCIceCandidateInit}          (trickle ICE)
//   {state: {audio: bool, video: bool, screen: bool}}  (mic / camera / screen)
//   {restart: true}                          (answerer asks for an ICE restart)
//
// It uses protocol v1.1 (docs/signaling.md): it joins with resume and
// iceRefresh, reconnects and resumes when its socket drops, and applies
// pushed iceServers with setConfiguration.
//
// Each peer connection carries two negotiated data channels, so that
// nothing of them passes through the server: "chat" (id 0) with JSON
// {t: 'chat', text, name, ts}, and "files" (id 1) with JSON control
// messages {t: 'file-offer', id, name, size, type}, {t: 'file-end', id},
// {t: 'file-cancel', id} and the chunks of the one file being sent on it
// as binary messages in between.
//
// For tests, the state lives on window.turnpikeDemo (myId, peers: Map of
// id -> {pc, name, ...}, chat, transfers, resumes, iceRefreshes).

'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('join-form'),
    name: $('name'),
    room: $('room'),
    relayOnly: $('relay-only'),
    join: $('join'),
    formError: $('form-error'),
    lobby: $('lobby'),
    call: $('call'),
    controls: $('controls'),
    leave: $('leave'),
    mute: $('mute'),
    camera: $('camera'),
    status: $('status'),
    grid: $('grid'),
    localTile: $('local-tile'),
    localVideo: $('local-video'),
    localName: $('local-name'),
    mediaNote: $('media-note'),
    roomTitle: $('room-title'),
    copyLink: $('copy-link'),
    alone: $('alone'),
    notices: $('notices'),
    peerTemplate: $('peer-tile'),
    share: $('share'),
    panel: $('panel'),
    unread: $('unread'),
    side: $('side'),
    sideClose: $('side-close'),
    chatLog: $('chat-log'),
    chatForm: $('chat-form'),
    chatInput: $('chat-input'),
    drop: $('drop'),
    fileInput: $('file-input'),
    fileTo: $('file-to'),
    transfers: $('transfers'),
    stats: $('stats'),
    iceInfo: $('ice-info'),
    cameraSelect: $('camera-select'),
    micSelect: $('mic-select'),
  };

  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const MAX_NAME = 64;
  // The server allows 50 messages/s (bursts of 100); stay well below.
  const SEND_RATE = 25;
  const SEND_BURST = 40;
  const MAX_PENDING_CANDIDATES = 200;
  const MAX_ICE_RESTARTS = 2;
  // A connection still 'disconnected' after this long is restarted:
  // Chromium takes far longer to call it 'failed', and a relay that went
  // away (a TURN server restarted, an allocation ended) never comes back.
  // Shorter blips recover by themselves.
  const DISCONNECTED_RESTART_MS = 5000;
  const STATS_INTERVAL_MS = 1000;
  // Resume: frames kept for a resend, messages queued while the socket is
  // down, and the waits between reconnection attempts.
  const TX_LOG_MAX = 256;
  const OUTBOX_MAX = 500;
  const RECONNECT_DELAYS_MS = [200, 500, 1000, 2000, 3000];
  const ACK_INTERVAL_MS = 5000;
  // Chat and files.
  const MAX_CHAT = 500;
  const MAX_CHAT_LEN = 2000;
  const CHUNK = 16 * 1024;
  const BUFFER_HIGH = 1024 * 1024;
  const BUFFER_LOW = 256 * 1024;
  // Received chunks are folded into a Blob every BLOB_PART bytes, so the
  // browser may keep big files on disk instead of in the page's memory.
  const BLOB_PART = 8 * 1024 * 1024;
  const MAX_TRANSFERS_SHOWN = 50;

  const VIDEO_CONSTRAINTS = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 30, max: 30 } };

  const params = new URLSearchParams(location.search);
  const token = params.get('token');

  const state = {
    phase: 'idle', // idle | media | connecting | joined
    ws: null,
    myId: null,
    room: null,
    name: '',
    relayOnly: false,
    iceServers: [],
    localStream: null,
    peers: new Map(),
    // Recent events, newest last, for debugging from the console or a test.
    events: [],
    // Bumped on every join and teardown, so callbacks of an old call stop.
    session: 0,
    // v1.1 resume: {token, grace} from joined/resumed, messages read and
    // frames sent since joined, whether the socket is being replaced.
    resume: null,
    rx: 0,
    acked: 0,
    tx: 0,
    txLog: [],
    counting: false,
    reconnecting: false,
    resumes: 0,
    // Times (ms since the epoch) and usernames of pushed iceServers.
    iceRefreshes: [],
    chat: [],
    unread: 0,
    transfers: new Map(),
    screen: null, // {stream, track} while sharing
    panelTab: 'chat',
  };
  window.turnpikeDemo = state;

  // ---------------------------------------------------------------- logging

  function log(...args) {
    const line = args
      .map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'string' ? a : safeJson(a)))
      .join(' ');
    state.events.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
    if (state.events.length > 300) state.events.splice(0, state.events.length - 300);
    console.log('[turnpike]', line);
  }

  function safeJson(value) {
    try {
      return JSON.stringify(value);
    } catch {
      return String(value);
    }
  }

  function describeError(e) {
    if (!e) return 'unknown error';
    return e.message ? `${e.name || 'Error'}: ${e.message}` : String(e.name || e);
  }

  // Nothing of ours should end as an unhandled rejection; if something
  // does anyway, it is logged rather than lost.
  window.addEventListener('unhandledrejection', (ev) => {
    log('unhandled rejection', describeError(ev.reason));
  });

  // ---------------------------------------------------------------- UI bits

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.className = `status${kind ? ` is-${kind}` : ''}`;
  }

  function notify(text, kind = 'info', ms = 5000) {
    const div = document.createElement('div');
    div.className = `notice ${kind}`;
    div.textContent = text;
    ui.notices.append(div);
    while (ui.notices.children.length > 4) ui.notices.firstElementChild.remove();
    setTimeout(() => {
      div.classList.add('fading');
      setTimeout(() => div.remove(), 350);
    }, ms);
  }

  function showFormError(text) {
    ui.formError.textContent = text;
    ui.formError.hidden = !text;
  }

  function initials(name) {
    // The first letter or digit of the first two words that have one.
    const letters = (name || '')
      .split(/\s+/)
      .map((word) => (word.match(/[\p{L}\p{N}]/u) || [''])[0])
      .filter(Boolean);
    return letters.length ? letters.slice(0, 2).join('').toUpperCase() : '?';
  }

  function peerLabel(peer) {
    return peer.name || `Guest ${peer.id.slice(0, 4)}`;
  }

  function updateStatus() {
    ui.grid.dataset.count = String(1 + state.peers.size);
    if (state.phase !== 'joined') return;
    const n = state.peers.size;
    setStatus(`Joined room ${state.room} as ${state.myId} · ${n} peer${n === 1 ? '' : 's'}`, 'joined');
    ui.alone.hidden = n > 0;
  }

  function cleanName(raw) {
    // The server refuses control characters and more than 64 characters.
    const noControls = raw.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim();
    return Array.from(noControls).slice(0, MAX_NAME).join('');
  }

  function inviteLink() {
    const url = new URL(location.pathname, location.origin);
    url.searchParams.set('room', state.room || ui.room.value.trim());
    if (token) url.searchParams.set('token', token);
    return url.toString();
  }

  function playVideo(video) {
    const attempt = video.play();
    if (!attempt) return;
    attempt.catch((e) => {
      if (e && e.name === 'NotAllowedError' && !video.muted) {
        // Autoplay with sound refused: play muted, unmute on the next click.
        video.muted = true;
        video.play().catch((e2) => log('video play failed', describeError(e2)));
        notify('The browser blocked sound: click anywhere to hear the others.', 'warn', 8000);
        document.addEventListener(
          'click',
          () => {
            video.muted = false;
            video.play().catch(() => {});
          },
          { once: true },
        );
      } else if (e && e.name !== 'AbortError') {
        log('video play failed', describeError(e));
      }
    });
  }

  // ---------------------------------------------------------------- signaling socket

  const outbox = [];
  let tokens = SEND_BURST;
  let lastRefill = performance.now();
  let drainTimer = null;

  function send(message) {
    const ws = state.ws;
    const resumable = state.phase === 'joined' && state.resume;
    if (state.reconnecting || (resumable && (!ws || ws.readyState !== WebSocket.OPEN))) {
      // Sent once the session is resumed (the socket may be closing
      // before the page is told).
      if (outbox.length < OUTBOX_MAX) outbox.push(JSON.stringify(message));
      else log('not sent (outbox full while reconnecting)', message.type);
      return;
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      log('not sent (socket not open)', message.type);
      return;
    }
    outbox.push(JSON.stringify(message));
    drain();
  }

  // Writes one frame; after joined, it is numbered and kept for a resend
  // (the server reports in `resumed` how many it read).
  function write(ws, text) {
    ws.send(text);
    if (!state.counting) return;
    state.tx += 1;
    state.txLog.push({ n: state.tx, text });
    if (state.txLog.length > TX_LOG_MAX) state.txLog.shift();
  }

  function drain() {
    const now = performance.now();
    tokens = Math.min(SEND_BURST, tokens + ((now - lastRefill) / 1000) * SEND_RATE);
    lastRefill = now;
    const ws = state.ws;
    if (state.reconnecting) return;
    while (outbox.length > 0 && tokens >= 1 && ws && ws.readyState === WebSocket.OPEN) {
      write(ws, outbox.shift());
      tokens -= 1;
    }
    if (outbox.length > 0 && !drainTimer && ws && ws.readyState === WebSocket.OPEN) {
      drainTimer = setTimeout(() => {
        drainTimer = null;
        drain();
      }, 1000 / SEND_RATE);
    }
  }

  function signal(to, data) {
    send({ type: 'signal', to, data });
  }

  function wsUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${scheme}//${location.host}/ws`;
    if (token) url += `?token=${encodeURIComponent(token)}`;
    return url;
  }

  // Counts a message read from the current socket (v1.1: the count is
  // what a resume says was read).
  function countRead(msg) {
    if (state.counting && msg.type !== 'joined' && msg.type !== 'resumed') state.rx += 1;
  }

  function sendJoin(room, name) {
    state.counting = false;
    state.rx = 0;
    state.tx = 0;
    state.acked = 0;
    state.txLog = [];
    send({ type: 'join', room, name: name || undefined, resume: true, iceRefresh: true });
  }

  function connect(room, name, session) {
    const url = wsUrl();
    setStatus('Connecting to the server…', 'connecting');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      failJoin(`Cannot open the signaling connection: ${describeError(e)}`);
      return;
    }
    state.ws = ws;
    state.phase = 'connecting';
    outbox.length = 0;
    ws.onopen = () => {
      if (state.ws !== ws || session !== state.session) return;
      setStatus(`Joining room ${room}…`, 'connecting');
      sendJoin(room, name);
    };
    ws.onmessage = (ev) => {
      if (state.ws !== ws) return;
      onFrame(ev.data);
    };
    ws.onerror = () => log('websocket error');
    ws.onclose = (ev) => {
      if (state.ws !== ws) return; // closed by us
      log('websocket closed', ev.code, ev.reason || '');
      if (state.phase === 'joined' && state.resume) {
        startReconnect(session);
        return;
      }
      const wasJoined = state.phase === 'joined';
      const why = ev.reason ? ` (${ev.reason})` : '';
      teardown();
      if (wasJoined) {
        setStatus('Disconnected from the server', 'error');
        notify(`Lost the connection to the server${why}. Join again to reconnect.`, 'error', 10000);
      } else {
        failJoin(`Could not reach the signaling server${why}.`);
      }
    };
  }

  function onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      log('ignored a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    countRead(msg);
    try {
      onServerMessage(msg);
    } catch (e) {
      log('error handling', msg.type, describeError(e));
    }
  }

  // The socket dropped while in a call: keep the peers (their media does
  // not go through us) and resume the session on a new socket, within the
  // grace period the server granted.
  function startReconnect(session) {
    state.reconnecting = true;
    state.counting = false;
    const deadline = Date.now() + Math.max(1, state.resume.grace - 1) * 1000;
    setStatus('Connection to the server lost; reconnecting…', 'connecting');
    notify('Lost the connection to the server; reconnecting…', 'warn', 4000);
    log('reconnecting; resume grace', state.resume.grace, 's');
    let attempt = 0;
    const tryOnce = () => {
      if (session !== state.session || !state.reconnecting) return;
      if (Date.now() > deadline) {
        log('gave up reconnecting');
        teardown();
        setStatus('Disconnected from the server', 'error');
        notify('Could not reconnect to the server. Join again.', 'error', 10000);
        return;
      }
      let ws;
      try {
        ws = new WebSocket(wsUrl());
      } catch (e) {
        log('reconnect failed', describeError(e));
        setTimeout(tryOnce, RECONNECT_DELAYS_MS[Math.min(attempt++, RECONNECT_DELAYS_MS.length - 1)]);
        return;
      }
      state.ws = ws;
      ws.onopen = () => {
        if (state.ws !== ws || session !== state.session) return;
        log('reconnected; resuming after', state.rx, 'messages');
        ws.send(JSON.stringify({ type: 'resume', token: state.resume.token, last: state.rx }));
      };
      ws.onmessage = (ev) => {
        if (state.ws === ws) onFrame(ev.data);
      };
      ws.onerror = () => log('websocket error (reconnecting)');
      ws.onclose = (ev) => {
        if (state.ws !== ws || session !== state.session) return;
        log('websocket closed', ev.code, ev.reason || '');
        if (state.reconnecting) {
          setTimeout(tryOnce, RECONNECT_DELAYS_MS[Math.min(attempt++, RECONNECT_DELAYS_MS.length - 1)]);
        } else if (state.phase === 'joined' && state.resume) {
          startReconnect(session);
        } else {
          teardown();
          setStatus('Disconnected from the server', 'error');
        }
      };
    };
    setTimeout(tryOnce, RECONNECT_DELAYS_MS[attempt++]);
  }

  function onResumed(msg) {
    if (!state.reconnecting) return;
    state.reconnecting = false;
    state.resume = msg.resume || null;
    state.resumes += 1;
    // Resend what the server did not read, then what waited meanwhile.
    const received = Number(msg.received) || 0;
    const unread = state.txLog.filter((e) => e.n > received).map((e) => e.text);
    state.txLog = [];
    state.tx = received;
    state.counting = true;
    outbox.unshift(...unread);
    log('resumed as', msg.id, '; resending', unread.length, 'frames, then', outbox.length - unread.length, 'queued');
    drain();
    updateStatus();
    notify('Reconnected to the server.', 'ok', 3000);
    // A peer connection that failed meanwhile gets an ICE restart now.
    for (const peer of state.peers.values()) {
      if (isBroken(peer)) recoverPeer(peer);
    }
  }

  // A resume that the server refused: start over in the same room.
  function onResumeFailed(text) {
    log('resume refused', text);
    state.reconnecting = false;
    state.resume = null;
    for (const id of Array.from(state.peers.keys())) removePeer(id, false);
    state.phase = 'connecting';
    outbox.length = 0;
    notify('The server had forgotten this call; joining again.', 'warn', 5000);
    sendJoin(state.room, state.name);
  }

  function onIceServers(msg) {
    if (!Array.isArray(msg.iceServers)) return;
    state.iceServers = msg.iceServers;
    const turn = msg.iceServers.find((s) => s.username);
    state.iceRefreshes.push({ at: Date.now(), username: turn ? turn.username : null });
    if (state.iceRefreshes.length > 20) state.iceRefreshes.shift();
    for (const peer of state.peers.values()) {
      try {
        peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers: msg.iceServers });
      } catch (e) {
        log('setConfiguration failed', peer.id, describeError(e));
      }
    }
    log('ice servers refreshed', turn ? turn.username : '');
    renderIceInfo();
  }

  function renderIceInfo() {
    const turn = state.iceServers.find((s) => s.username);
    const expiry = turn ? Number(String(turn.username).split(':')[0]) : NaN;
    const refreshes = state.iceRefreshes.length;
    ui.iceInfo.textContent = Number.isFinite(expiry)
      ? `TURN credential valid until ${new Date(expiry * 1000).toLocaleTimeString()}; refreshed ${refreshes} time${refreshes === 1 ? '' : 's'}.`
      : '';
  }

  function onServerMessage(msg) {
    switch (msg.type) {
      case 'joined':
        onJoined(msg);
        break;
      case 'resumed':
        onResumed(msg);
        break;
      case 'ice-servers':
        onIceServers(msg);
        break;
      case 'peer-joined': {
        if (state.phase !== 'joined' || !msg.id || state.peers.has(msg.id)) break;
        const peer = createPeer(msg.id, msg.name, false);
        if (peer) notify(`${peerLabel(peer)} joined`, 'ok', 3000);
        break;
      }
      case 'peer-left':
        removePeer(msg.id, true);
        break;
      case 'signal':
        onSignal(msg.from, msg.data);
        break;
      case 'pong':
        break;
      case 'error':
        onServerError(msg);
        break;
      default:
        log('ignored message of type', msg.type);
    }
  }

  function onServerError(msg) {
    const code = String(msg.code || 'error');
    const text = String(msg.message || '');
    log('server error', code, text);
    if (code === 'resume-failed') {
      onResumeFailed(text);
      return;
    }
    if (state.phase === 'connecting' || code === 'unauthorized') {
      const friendly = {
        'room-full': `Room “${ui.room.value.trim()}” is full (${text}).`,
        unauthorized: 'This server only admits invited guests: open the invitation link (it has ?token=…) you were given.',
      };
      teardown();
      failJoin(friendly[code] || `The server refused to join: ${text} (${code})`);
      return;
    }
    notify(`Server: ${text} (${code})`, code === 'rate-limited' ? 'warn' : 'error', 7000);
  }

  function onJoined(msg) {
    if (state.phase !== 'connecting') return;
    state.phase = 'joined';
    state.myId = msg.id;
    state.room = msg.room;
    state.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    state.resume = msg.resume && msg.resume.token ? msg.resume : null;
    state.counting = true;
    state.rx = 0;
    renderIceInfo();
    log('joined', msg.room, 'as', msg.id, 'peers', (msg.peers || []).length, 'ice servers', state.iceServers.length);
    const url = new URL(location.href);
    url.searchParams.set('room', msg.room);
    history.replaceState(null, '', url);

    ui.lobby.hidden = true;
    ui.call.hidden = false;
    ui.controls.hidden = false;
    ui.roomTitle.textContent = '';
    const label = document.createElement('span');
    label.textContent = 'Room ';
    const roomName = document.createElement('span');
    roomName.className = 'room-name';
    roomName.textContent = msg.room;
    ui.roomTitle.append(label, roomName);
    if (state.relayOnly) {
      const tag = document.createElement('small');
      tag.className = 'relay-tag';
      tag.textContent = ' · relay only';
      ui.roomTitle.append(tag);
    }
    for (const p of msg.peers || []) {
      if (p && p.id && p.id !== state.myId) createPeer(p.id, p.name, true);
    }
    clearInterval(state.ackTimer);
    state.ackTimer = setInterval(() => {
      if (state.counting && !state.reconnecting && state.resume && state.rx > state.acked) {
        state.acked = state.rx;
        send({ type: 'ack', seq: state.rx });
      }
    }, ACK_INTERVAL_MS);
    updateStatus();
    renderFileTargets();
  }

  // ---------------------------------------------------------------- peers

  function createPeer(id, name, initiator) {
    let pc;
    try {
      pc = new RTCPeerConnection({
        iceServers: state.iceServers,
        iceTransportPolicy: state.relayOnly ? 'relay' : 'all',
      });
    } catch (e) {
      log('cannot create RTCPeerConnection', describeError(e));
      notify(`Cannot connect to ${name || id}: ${describeError(e)}`, 'error');
      return null;
    }
    const tile = ui.peerTemplate.content.firstElementChild.cloneNode(true);
    tile.dataset.peerId = id;
    const peer = {
      id,
      name: typeof name === 'string' && name ? name : null,
      pc,
      initiator,
      tile,
      video: tile.querySelector('video'),
      badge: tile.querySelector('.badge'),
      iceState: tile.querySelector('.ice-state'),
      flags: tile.querySelector('.tile-flags'),
      stream: new MediaStream(),
      pending: [], // remote candidates that came before the remote description
      queue: Promise.resolve(), // signals of this peer, handled one at a time
      tracksAdded: false,
      restarts: 0,
      disconnectedTimer: null,
      closed: false,
      statsTimer: null,
      statsBusy: false,
      remote: { audio: true, video: true, screen: false },
      selected: null, // {local, remote, ...} of the selected candidate pair
      lastBytes: null,
      stats: null, // what the stats panel shows
      // Negotiated data channels (same ids on both sides, no extra
      // signaling): chat, and files (one transfer at a time per peer).
      chat: null,
      files: null,
      sendQueue: [], // transfers waiting for this peer's files channel
      sending: null,
      receiving: null,
    };
    tile.querySelector('.tile-name').textContent = peerLabel(peer);
    tile.querySelector('.avatar').dataset.initials = initials(peer.name || '?');
    tile.classList.add('no-video');
    ui.grid.append(tile);
    state.peers.set(id, peer);

    pc.onicecandidate = (ev) => {
      if (!ev.candidate || peer.closed) return;
      const c = ev.candidate;
      if (c.type) log('local candidate', id, c.type, c.protocol || '', `${c.address || ''}:${c.port || ''}`);
      signal(id, { candidate: c.toJSON() });
    };
    pc.onicecandidateerror = (ev) => {
      log('ice candidate error', id, ev.url || '', ev.errorCode, ev.errorText || '', `${ev.address || ''}:${ev.port || ''}`);
    };
    pc.oniceconnectionstatechange = () => onIceState(peer);
    pc.onconnectionstatechange = () => log('connection state', id, pc.connectionState);
    pc.onicegatheringstatechange = () => log('ice gathering', id, pc.iceGatheringState);
    pc.ontrack = (ev) => onTrack(peer, ev);
    setupChannels(peer);

    if (initiator) {
      addLocalMediaAsOfferer(peer);
      makeOffer(peer, false);
    }
    peer.statsTimer = setInterval(() => {
      updateStats(peer).catch((e) => log('stats failed', describeError(e)));
    }, STATS_INTERVAL_MS);
    renderIceState(peer);
    updateStatus();
    renderFileTargets();
    return peer;
  }

  function localTrack(kind) {
    const s = state.localStream;
    return s ? (kind === 'audio' ? s.getAudioTracks()[0] : s.getVideoTracks()[0]) || null : null;
  }

  // The offer always has an audio and a video section, so the answerer can
  // send both even when this side has no camera or microphone.
  function addLocalMediaAsOfferer(peer) {
    for (const kind of ['audio', 'video']) {
      const track = kind === 'video' && state.screen ? state.screen.track : localTrack(kind);
      if (track) peer.pc.addTransceiver(track, { direction: 'sendrecv', streams: [state.localStream] });
      else peer.pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    peer.tracksAdded = true;
  }

  async function makeOffer(peer, iceRestart) {
    try {
      const offer = await peer.pc.createOffer({ iceRestart });
      if (peer.closed) return;
      await peer.pc.setLocalDescription(offer);
      if (peer.closed) return;
      signal(peer.id, { description: peer.pc.localDescription.toJSON() });
      log(iceRestart ? 'sent ICE-restart offer to' : 'sent offer to', peer.id);
    } catch (e) {
      if (peer.closed) return;
      log('offer failed', peer.id, describeError(e));
      notify(`Could not call ${peerLabel(peer)}: ${describeError(e)}`, 'error');
    }
  }

  function onSignal(from, data) {
    if (state.phase !== 'joined' || !from || !data || typeof data !== 'object') return;
    let peer = state.peers.get(from);
    if (!peer) {
      // peer-joined always comes first, but an offer is enough to start.
      if (!(data.description && data.description.type === 'offer')) return;
      peer = createPeer(from, null, false);
      if (!peer) return;
    }
    peer.queue = peer.queue
      .then(() => handleSignal(peer, data))
      .catch((e) => {
        if (!peer.closed) log('signal handling failed', from, describeError(e));
      });
  }

  async function handleSignal(peer, data) {
    if (peer.closed) return;
    if (data.description) await onDescription(peer, data.description);
    else if ('candidate' in data) await onCandidate(peer, data.candidate);
    else if (data.state) onRemoteState(peer, data.state);
    else if (data.restart && peer.initiator) restartIce(peer);
  }

  async function onDescription(peer, description) {
    const pc = peer.pc;
    if (description.type === 'offer') {
      await pc.setRemoteDescription(description);
      if (peer.closed) return;
      if (!peer.tracksAdded) {
        // addTrack reuses the transceivers the offer created.
        const stream = state.localStream;
        if (stream) {
          for (const track of stream.getTracks()) {
            pc.addTrack(track.kind === 'video' && state.screen ? state.screen.track : track, stream);
          }
        }
        peer.tracksAdded = true;
      }
      await flushCandidates(peer);
      await pc.setLocalDescription(await pc.createAnswer());
      if (peer.closed) return;
      signal(peer.id, { description: pc.localDescription.toJSON() });
      sendState(peer.id);
      log('answered', peer.id);
    } else if (description.type === 'answer') {
      if (pc.signalingState !== 'have-local-offer') {
        log('ignored an answer in state', pc.signalingState);
        return;
      }
      await pc.setRemoteDescription(description);
      if (peer.closed) return;
      await flushCandidates(peer);
      sendState(peer.id);
      log('got answer from', peer.id);
    } else {
      log('ignored a description of type', description.type);
    }
  }

  async function onCandidate(peer, candidate) {
    if (!candidate) return;
    if (!peer.pc.remoteDescription) {
      if (peer.pending.length < MAX_PENDING_CANDIDATES) peer.pending.push(candidate);
      return;
    }
    await addCandidate(peer, candidate);
  }

  async function flushCandidates(peer) {
    const pending = peer.pending.splice(0);
    for (const candidate of pending) await addCandidate(peer, candidate);
  }

  async function addCandidate(peer, candidate) {
    try {
      await peer.pc.addIceCandidate(candidate);
    } catch (e) {
      if (!peer.closed) log('addIceCandidate failed', peer.id, describeError(e));
    }
  }

  function onTrack(peer, ev) {
    const track = ev.track;
    if (!peer.stream.getTrackById(track.id)) peer.stream.addTrack(track);
    if (peer.video.srcObject !== peer.stream) {
      peer.video.srcObject = peer.stream;
      playVideo(peer.video);
    }
    const refresh = () => renderRemoteVideo(peer);
    track.addEventListener('mute', refresh);
    track.addEventListener('unmute', refresh);
    track.addEventListener('ended', refresh);
    refresh();
    log('track from', peer.id, track.kind);
  }

  function onRemoteState(peer, remote) {
    peer.remote = { audio: remote.audio !== false, video: remote.video !== false, screen: remote.screen === true };
    renderRemoteVideo(peer);
  }

  function renderRemoteVideo(peer) {
    const video = peer.stream.getVideoTracks().find((t) => t.readyState === 'live' && !t.muted);
    peer.tile.classList.toggle('no-video', !video || !peer.remote.video);
    const flags = [];
    if (!peer.remote.audio) flags.push('muted');
    if (peer.remote.screen) flags.push('sharing screen');
    peer.tile.classList.toggle('sharing', peer.remote.screen);
    if (peer.remote.screen) peer.tile.classList.remove('no-video');
    peer.flags.textContent = flags.join(' · ');
  }

  function onIceState(peer) {
    const s = peer.pc.iceConnectionState;
    log('ice state', peer.id, s);
    renderIceState(peer);
    if (s === 'connected' || s === 'completed') peer.restarts = 0;
    clearTimeout(peer.disconnectedTimer);
    peer.disconnectedTimer = null;
    if (peer.closed) return;
    if (s === 'disconnected') {
      peer.disconnectedTimer = setTimeout(() => {
        peer.disconnectedTimer = null;
        if (peer.closed || peer.pc.iceConnectionState !== 'disconnected') return;
        log('still disconnected', peer.id);
        if (!state.reconnecting) recoverPeer(peer);
      }, DISCONNECTED_RESTART_MS);
      return;
    }
    if (s !== 'failed') return;
    if (state.reconnecting) return; // recovered once the signaling is back
    recoverPeer(peer);
  }

  // A connection that needs a restart: failed, or disconnected for longer
  // than DISCONNECTED_RESTART_MS.
  function isBroken(peer) {
    const s = peer.pc.iceConnectionState;
    return s === 'failed' || (s === 'disconnected' && !peer.disconnectedTimer);
  }

  // A failed peer connection: the offerer restarts ICE; the answerer asks
  // it to (only one side offers, so offers never cross).
  function recoverPeer(peer) {
    if (peer.initiator) {
      restartIce(peer);
    } else {
      notify(`Connection to ${peerLabel(peer)} failed; asking for a restart…`, 'warn');
      signal(peer.id, { restart: true });
    }
  }

  // An ICE restart: a new offer with fresh ICE credentials, gathered with
  // the current iceServers (fresh TURN credentials included).
  function restartIce(peer, why) {
    if (peer.closed) return;
    // Both sides may ask at once; one restart in flight is enough.
    if (peer.pc.signalingState !== 'stable') {
      log('ice restart already under way', peer.id);
      return;
    }
    if (peer.restarts >= MAX_ICE_RESTARTS) {
      notify(`Could not connect to ${peerLabel(peer)}.`, 'error', 8000);
      return;
    }
    peer.restarts += 1;
    if (why !== 'requested') notify(`Connection to ${peerLabel(peer)} failed; restarting ICE…`, 'warn');
    log('ice restart', peer.id);
    makeOffer(peer, true);
  }

  function renderIceState(peer) {
    const s = peer.pc.iceConnectionState;
    const rtt = peer.selected && typeof peer.selected.rtt === 'number' ? ` · ${Math.round(peer.selected.rtt * 1000)} ms` : '';
    peer.iceState.textContent = `${s}${s === 'connected' || s === 'completed' ? rtt : ''}`;
    peer.iceState.className = `ice-state state-${s}`;
  }

  function removePeer(id, announce) {
    const peer = state.peers.get(id);
    if (!peer) return;
    peer.closed = true;
    clearInterval(peer.statsTimer);
    clearTimeout(peer.disconnectedTimer);
    closeTransfersOf(peer);
    try {
      peer.pc.close();
    } catch (e) {
      log('close failed', describeError(e));
    }
    peer.video.srcObject = null;
    peer.tile.remove();
    state.peers.delete(id);
    if (announce) notify(`${peerLabel(peer)} left the call`, 'info', 4000);
    log('peer removed', id);
    updateStatus();
    renderFileTargets();
    renderStatsPanel();
  }

  // ---------------------------------------------------------------- stats

  // The pair the transport selected, else a nominated (or any) succeeded one.
  function selectedPair(report) {
    let pair = null;
    report.forEach((s) => {
      if (!pair && s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || null;
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.state === 'succeeded' && (!pair || (s.nominated && !pair.nominated))) pair = s;
      });
    }
    return pair;
  }

  async function updateStats(peer) {
    if (peer.closed || peer.statsBusy) return;
    peer.statsBusy = true;
    try {
      const report = await peer.pc.getStats();
      if (peer.closed) return;
      const pair = selectedPair(report);
      const local = pair && report.get(pair.localCandidateId);
      const remote = pair && report.get(pair.remoteCandidateId);
      let videoIn = null;
      let audioLevel = 0;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') videoIn = s;
        if (s.type === 'inbound-rtp' && s.kind === 'audio' && typeof s.audioLevel === 'number') audioLevel = s.audioLevel;
      });
      let kbps = null;
      let kbpsOut = null;
      if (pair && typeof pair.bytesReceived === 'number') {
        if (peer.lastBytes && peer.lastBytes.id === pair.id) {
          const ms = pair.timestamp - peer.lastBytes.t;
          if (ms > 0) {
            kbps = ((pair.bytesReceived - peer.lastBytes.b) * 8) / ms;
            kbpsOut = ((pair.bytesSent - peer.lastBytes.s) * 8) / ms;
          }
        }
        peer.lastBytes = { id: pair.id, b: pair.bytesReceived, s: pair.bytesSent || 0, t: pair.timestamp };
      }
      let lost = 0;
      let received = 0;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp') {
          lost += Math.max(0, s.packetsLost || 0);
          received += s.packetsReceived || 0;
        }
      });
      peer.stats = {
        local: local ? local.candidateType : null,
        remote: remote ? remote.candidateType : null,
        protocol: local ? local.protocol : null,
        relayProtocol: local ? local.relayProtocol || null : null,
        rttMs: pair && typeof pair.currentRoundTripTime === 'number' ? Math.round(pair.currentRoundTripTime * 1000) : null,
        kbpsIn: kbps === null ? null : Math.round(kbps),
        kbpsOut: kbpsOut === null ? null : Math.round(kbpsOut),
        lossPct: received + lost > 0 ? Math.round((1000 * lost) / (received + lost)) / 10 : null,
        width: videoIn ? videoIn.frameWidth || null : null,
        height: videoIn ? videoIn.frameHeight || null : null,
        fps: videoIn && typeof videoIn.framesPerSecond === 'number' ? Math.round(videoIn.framesPerSecond) : null,
        framesDecoded: videoIn ? videoIn.framesDecoded || 0 : 0,
      };
      peer.selected =
        local && remote
          ? {
              local: local.candidateType,
              remote: remote.candidateType,
              protocol: local.protocol,
              relayProtocol: local.relayProtocol || null,
              localAddress: `${local.address || local.ip}:${local.port}`,
              remoteAddress: `${remote.address || remote.ip}:${remote.port}`,
              rtt: pair.currentRoundTripTime,
              kbps,
              framesDecoded: videoIn ? videoIn.framesDecoded || 0 : 0,
            }
          : null;
      renderBadge(peer);
      renderIceState(peer);
      if (state.panelTab === 'stats' && !ui.side.hidden) renderStatsPanel();
      peer.tile.classList.toggle('speaking', peer.remote.audio && audioLevel > 0.05);
    } finally {
      peer.statsBusy = false;
    }
  }

  function renderBadge(peer) {
    const sel = peer.selected;
    const badge = peer.badge;
    if (!sel) {
      badge.textContent = peer.pc.iceConnectionState === 'failed' ? 'no route' : 'connecting…';
      badge.className = 'badge badge-pending';
      badge.title = 'No candidate pair selected yet';
      return;
    }
    const via = sel.relayProtocol ? `/${sel.relayProtocol}` : '';
    badge.textContent = `${sel.local}${via} ⇄ ${sel.remote}`;
    badge.className = `badge badge-${sel.local}`;
    const lines = [
      `local ${sel.local} ${sel.localAddress} (${sel.protocol}${sel.relayProtocol ? `, to TURN over ${sel.relayProtocol}` : ''})`,
      `remote ${sel.remote} ${sel.remoteAddress}`,
    ];
    if (typeof sel.rtt === 'number') lines.push(`round trip ${Math.round(sel.rtt * 1000)} ms`);
    if (typeof sel.kbps === 'number') lines.push(`receiving ${Math.round(sel.kbps)} kbit/s`);
    badge.title = lines.join('\n');
  }

  // ---------------------------------------------------------------- side panel

  function openPanel(tab) {
    state.panelTab = tab;
    ui.side.hidden = false;
    ui.panel.setAttribute('aria-expanded', 'true');
    for (const button of ui.side.querySelectorAll('.side-tab')) {
      button.setAttribute('aria-selected', String(button.dataset.tab === tab));
    }
    for (const name of ['chat', 'files', 'stats', 'devices']) $(`tab-${name}`).hidden = name !== tab;
    if (tab === 'chat') {
      markChatRead();
      ui.chatInput.focus();
    } else if (tab === 'stats') {
      renderStatsPanel();
    } else if (tab === 'devices') {
      refreshDevices().catch((e) => log('devices failed', describeError(e)));
    }
  }

  function closePanel() {
    ui.side.hidden = true;
    ui.panel.setAttribute('aria-expanded', 'false');
  }

  function chatVisible() {
    return !ui.side.hidden && state.panelTab === 'chat' && !document.hidden;
  }

  // ---------------------------------------------------------------- data channels

  function setupChannels(peer) {
    try {
      peer.chat = peer.pc.createDataChannel('chat', { negotiated: true, id: 0, ordered: true });
      peer.files = peer.pc.createDataChannel('files', { negotiated: true, id: 1, ordered: true });
    } catch (e) {
      log('data channels failed', peer.id, describeError(e));
      return;
    }
    peer.chat.onopen = () => log('chat channel open', peer.id);
    peer.chat.onmessage = (ev) => onChatMessage(peer, ev.data);
    peer.files.binaryType = 'arraybuffer';
    peer.files.bufferedAmountLowThreshold = BUFFER_LOW;
    peer.files.onopen = () => {
      log('files channel open', peer.id);
      pumpFiles(peer);
    };
    peer.files.onmessage = (ev) => onFileMessage(peer, ev.data);
    peer.files.onclose = () => closeTransfersOf(peer);
  }

  // ---------------------------------------------------------------- chat

  function sendChat(text) {
    const clean = Array.from(text.trim()).slice(0, MAX_CHAT_LEN).join('');
    if (!clean) return;
    const ts = Date.now();
    const payload = JSON.stringify({ t: 'chat', text: clean, name: state.name || null, ts });
    let delivered = 0;
    for (const peer of state.peers.values()) {
      if (peer.chat && peer.chat.readyState === 'open') {
        try {
          peer.chat.send(payload);
          delivered += 1;
        } catch (e) {
          log('chat send failed', peer.id, describeError(e));
        }
      }
    }
    if (delivered === 0) notify('Nobody is connected to read that yet.', 'warn', 4000);
    addChat({ from: state.myId, name: state.name || 'You', text: clean, ts, mine: true, delivered });
  }

  function onChatMessage(peer, data) {
    if (typeof data !== 'string' || data.length > 4 * MAX_CHAT_LEN + 200) return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (!m || m.t !== 'chat' || typeof m.text !== 'string' || !m.text) return;
    const ts = Number.isFinite(m.ts) ? m.ts : Date.now();
    addChat({ from: peer.id, name: peerLabel(peer), text: m.text.slice(0, MAX_CHAT_LEN), ts, mine: false });
  }

  function addChat(entry) {
    const unread = !entry.mine && !chatVisible();
    const item = { ...entry, unread };
    state.chat.push(item);
    if (state.chat.length > MAX_CHAT) state.chat.shift();
    const li = document.createElement('li');
    li.className = `chat-msg${entry.mine ? ' mine' : ''}${unread ? ' unread' : ''}`;
    li.dataset.from = entry.from || '';
    const meta = document.createElement('div');
    meta.className = 'chat-meta';
    const name = document.createElement('span');
    name.className = 'chat-name';
    name.textContent = entry.mine ? 'You' : entry.name;
    const time = document.createElement('time');
    time.dateTime = new Date(entry.ts).toISOString();
    time.textContent = new Date(entry.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    meta.append(name, time);
    const text = document.createElement('div');
    text.className = 'chat-text';
    text.textContent = entry.text;
    li.append(meta, text);
    ui.chatLog.append(li);
    while (ui.chatLog.children.length > MAX_CHAT) ui.chatLog.firstElementChild.remove();
    ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
    if (unread) {
      state.unread += 1;
      renderUnread();
      if (ui.side.hidden) notify(`${entry.name}: ${entry.text.slice(0, 80)}`, 'info', 4000);
    }
  }

  function markChatRead() {
    if (state.unread === 0) return;
    state.unread = 0;
    for (const item of state.chat) item.unread = false;
    renderUnread();
    // The marks stay a moment, so one sees which messages are new.
    const marked = Array.from(ui.chatLog.querySelectorAll('.chat-msg.unread'));
    setTimeout(() => marked.forEach((li) => li.classList.remove('unread')), 2000);
  }

  function renderUnread() {
    ui.unread.hidden = state.unread === 0;
    ui.unread.textContent = String(state.unread);
    ui.panel.title = state.unread ? `${state.unread} unread message${state.unread === 1 ? '' : 's'}` : 'Chat, files, stats and devices';
  }

  // ---------------------------------------------------------------- files

  let transferSeq = 0;

  function newTransfer(fields) {
    const id = fields.id || `${Date.now().toString(36)}-${(transferSeq += 1)}-${Math.random().toString(36).slice(2, 8)}`;
    const t = { id, done: 0, state: 'waiting', progressEvents: 0, lastRender: 0, url: null, blob: null, ...fields };
    state.transfers.set(`${t.dir}:${t.peer.id}:${id}`, t);
    const li = document.createElement('li');
    li.className = 'transfer';
    li.dataset.dir = t.dir;
    li.dataset.peerId = t.peer.id;
    const title = document.createElement('strong');
    title.className = 'transfer-name';
    title.textContent = t.name;
    const size = document.createElement('span');
    size.className = 'transfer-size';
    size.textContent = `${formatBytes(t.size)} ${t.dir === 'out' ? 'to' : 'from'} ${peerLabel(t.peer)}`;
    const progress = document.createElement('progress');
    progress.max = Math.max(1, t.size);
    progress.value = 0;
    const status = document.createElement('span');
    status.className = 'transfer-state';
    const actions = document.createElement('span');
    actions.className = 'transfer-actions';
    const cancel = document.createElement('button');
    cancel.type = 'button';
    cancel.className = 'btn btn-ghost btn-small transfer-cancel';
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', () => cancelTransfer(t, true));
    actions.append(cancel);
    li.append(title, actions, size, progress, status);
    t.el = { li, progress, status, cancel, actions };
    ui.transfers.prepend(li);
    // Only the newest MAX_TRANSFERS_SHOWN are kept (finished ones first
    // to go), and a forgotten one's received file is let go.
    if (state.transfers.size > MAX_TRANSFERS_SHOWN) {
      for (const [key, old] of state.transfers) {
        if (state.transfers.size <= MAX_TRANSFERS_SHOWN) break;
        if (['waiting', 'sending', 'receiving'].includes(old.state)) continue;
        if (old.url) URL.revokeObjectURL(old.url);
        old.blob = null;
        old.el.li.remove();
        state.transfers.delete(key);
      }
    }
    renderTransfer(t, true);
    return t;
  }

  function renderTransfer(t, force) {
    const now = performance.now();
    if (!force && now - t.lastRender < 100) return;
    t.lastRender = now;
    t.progressEvents += 1;
    const { li, progress, status, cancel } = t.el;
    progress.value = t.done;
    const pct = t.size > 0 ? Math.floor((100 * t.done) / t.size) : 100;
    const words = {
      waiting: 'waiting…',
      sending: `sending… ${pct} %`,
      receiving: `receiving… ${pct} %`,
      sent: 'sent',
      done: 'received',
      cancelled: 'cancelled',
      failed: `failed: ${t.error || ''}`,
    };
    status.textContent = words[t.state] || t.state;
    li.classList.toggle('done', t.state === 'done' || t.state === 'sent');
    li.classList.toggle('failed', t.state === 'failed' || t.state === 'cancelled');
    cancel.hidden = !['waiting', 'sending', 'receiving'].includes(t.state);
    if (t.url && !li.querySelector('a.transfer-download')) {
      const a = document.createElement('a');
      a.className = 'btn btn-primary btn-small transfer-download';
      a.href = t.url;
      a.download = t.name;
      a.textContent = 'Download';
      t.el.actions.append(a);
    }
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
    return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
  }

  function renderFileTargets() {
    const current = ui.fileTo.value;
    ui.fileTo.textContent = '';
    const all = document.createElement('option');
    all.value = '';
    all.textContent = 'Everyone';
    ui.fileTo.append(all);
    for (const peer of state.peers.values()) {
      const o = document.createElement('option');
      o.value = peer.id;
      o.textContent = peerLabel(peer);
      if (peer.id === current) o.selected = true;
      ui.fileTo.append(o);
    }
  }

  // Sends `file` to peer `toId`, or to everyone: one transfer per peer,
  // queued on that peer's files channel.
  function sendFile(file, toId) {
    if (!file) return [];
    const targets = toId ? [state.peers.get(toId)].filter(Boolean) : Array.from(state.peers.values());
    if (targets.length === 0) {
      notify('Nobody to send the file to.', 'warn', 4000);
      return [];
    }
    const out = [];
    for (const peer of targets) {
      const t = newTransfer({ dir: 'out', peer, name: file.name || 'file', size: file.size, type: file.type || '', file });
      peer.sendQueue.push(t);
      out.push(t);
      pumpFiles(peer);
    }
    return out;
  }

  function pumpFiles(peer) {
    if (peer.sending || peer.closed || !peer.files || peer.files.readyState !== 'open') return;
    const t = peer.sendQueue.shift();
    if (!t) return;
    peer.sending = t;
    sendTransfer(peer, t)
      .catch((e) => {
        if (t.state === 'sending' || t.state === 'waiting') {
          t.state = 'failed';
          t.error = describeError(e);
          renderTransfer(t, true);
        }
      })
      .finally(() => {
        peer.sending = null;
        pumpFiles(peer);
      });
  }

  function waitBufferLow(channel) {
    return new Promise((resolve) => {
      const done = () => {
        channel.removeEventListener('bufferedamountlow', done);
        channel.removeEventListener('close', done);
        resolve();
      };
      channel.addEventListener('bufferedamountlow', done);
      channel.addEventListener('close', done);
    });
  }

  // Reads the file a slice at a time and sends it in CHUNK messages,
  // waiting whenever more than BUFFER_HIGH is queued in the channel: the
  // page never holds more than a slice and the channel's buffer.
  async function sendTransfer(peer, t) {
    const channel = peer.files;
    channel.send(JSON.stringify({ t: 'file-offer', id: t.id, name: t.name, size: t.size, type: t.type }));
    t.state = 'sending';
    renderTransfer(t, true);
    const SLICE = 16 * CHUNK;
    let offset = 0;
    while (offset < t.size) {
      if (t.state !== 'sending') return;
      if (channel.readyState !== 'open') throw new Error('the data channel closed');
      const slice = new Uint8Array(await t.file.slice(offset, Math.min(offset + SLICE, t.size)).arrayBuffer());
      for (let at = 0; at < slice.byteLength; at += CHUNK) {
        while (channel.bufferedAmount > BUFFER_HIGH && channel.readyState === 'open') await waitBufferLow(channel);
        if (t.state !== 'sending') return;
        if (channel.readyState !== 'open') throw new Error('the data channel closed');
        channel.send(slice.subarray(at, Math.min(at + CHUNK, slice.byteLength)));
        t.done = offset + Math.min(at + CHUNK, slice.byteLength);
        renderTransfer(t, false);
      }
      offset += slice.byteLength;
    }
    channel.send(JSON.stringify({ t: 'file-end', id: t.id }));
    t.state = 'sent';
    t.file = null;
    renderTransfer(t, true);
    log('file sent', t.name, t.size, 'to', peer.id);
  }

  function onFileMessage(peer, data) {
    if (typeof data === 'string') {
      let m;
      try {
        m = JSON.parse(data);
      } catch {
        return;
      }
      if (!m || typeof m.id !== 'string' || m.id.length > 100) return;
      if (m.t === 'file-offer') {
        if (peer.receiving) failReceive(peer.receiving, 'a new file came before the end of this one');
        const size = Number(m.size);
        if (!Number.isSafeInteger(size) || size < 0) return;
        const name = String(m.name || 'file').replace(/[\u0000-\u001f/\\]/g, '_').slice(0, 200) || 'file';
        const type = typeof m.type === 'string' && m.type.length < 200 ? m.type : '';
        const t = newTransfer({ dir: 'in', id: m.id, peer, name, size, type, parts: [], pending: [], pendingBytes: 0 });
        t.state = 'receiving';
        peer.receiving = t;
        renderTransfer(t, true);
        if (ui.side.hidden) notify(`${peerLabel(peer)} is sending you ${name} (${formatBytes(size)})`, 'info', 5000);
      } else if (m.t === 'file-end') {
        const t = peer.receiving;
        if (t && t.id === m.id) finishReceive(peer, t);
      } else if (m.t === 'file-cancel') {
        const inbound = peer.receiving;
        if (inbound && inbound.id === m.id) {
          peer.receiving = null;
          dropParts(inbound);
          inbound.state = 'cancelled';
          inbound.error = 'by the sender';
          renderTransfer(inbound, true);
        }
        const outbound = peer.sending && peer.sending.id === m.id ? peer.sending : null;
        if (outbound) {
          outbound.state = 'cancelled';
          renderTransfer(outbound, true);
        }
      }
      return;
    }
    const t = peer.receiving;
    if (!t || !(data instanceof ArrayBuffer)) return; // the rest of a cancelled file
    t.pending.push(data);
    t.pendingBytes += data.byteLength;
    t.done += data.byteLength;
    if (t.done > t.size) {
      failReceive(t, 'more data than announced');
      return;
    }
    if (t.pendingBytes >= BLOB_PART) {
      t.parts.push(new Blob(t.pending));
      t.pending = [];
      t.pendingBytes = 0;
    }
    renderTransfer(t, false);
  }

  function finishReceive(peer, t) {
    peer.receiving = null;
    t.parts.push(new Blob(t.pending));
    t.pending = [];
    const blob = new Blob(t.parts, { type: t.type || 'application/octet-stream' });
    t.parts = [];
    if (blob.size !== t.size) {
      failReceive(t, `got ${blob.size} bytes of ${t.size}`);
      return;
    }
    t.blob = blob;
    t.url = URL.createObjectURL(blob);
    t.state = 'done';
    renderTransfer(t, true);
    log('file received', t.name, t.size, 'from', peer.id);
  }

  function dropParts(t) {
    t.parts = [];
    t.pending = [];
    t.pendingBytes = 0;
  }

  function failReceive(t, why) {
    if (t.peer.receiving === t) t.peer.receiving = null;
    dropParts(t);
    t.state = 'failed';
    t.error = why;
    renderTransfer(t, true);
  }

  // Cancel from this side: the other side is told on the files channel.
  function cancelTransfer(t, tell) {
    if (!['waiting', 'sending', 'receiving'].includes(t.state)) return;
    const peer = t.peer;
    if (t.dir === 'out') {
      const queued = peer.sendQueue.indexOf(t);
      if (queued >= 0) peer.sendQueue.splice(queued, 1);
    } else if (peer.receiving === t) {
      peer.receiving = null;
      dropParts(t);
    }
    const started = t.state !== 'waiting';
    t.state = 'cancelled';
    t.file = null;
    renderTransfer(t, true);
    if (tell && started && peer.files && peer.files.readyState === 'open') {
      try {
        peer.files.send(JSON.stringify({ t: 'file-cancel', id: t.id }));
      } catch (e) {
        log('cancel not sent', describeError(e));
      }
    }
  }

  function closeTransfersOf(peer) {
    for (const t of state.transfers.values()) {
      if (t.peer === peer && ['waiting', 'sending', 'receiving'].includes(t.state)) {
        dropParts(t);
        t.state = 'failed';
        t.error = 'the connection closed';
        t.file = null;
        renderTransfer(t, true);
      }
    }
    peer.sendQueue = [];
    peer.receiving = null;
  }

  function clearTransfers() {
    for (const t of state.transfers.values()) {
      if (t.url) URL.revokeObjectURL(t.url);
    }
    state.transfers.clear();
    ui.transfers.textContent = '';
  }

  // ---------------------------------------------------------------- screen sharing

  // The transceiver that carries video to `peer` (whatever track it sends).
  function senderFor(peer, kind) {
    const t = peer.pc
      .getTransceivers()
      .find((x) => !x.stopped && x.receiver && x.receiver.track && x.receiver.track.kind === kind);
    return t ? t.sender : null;
  }

  async function sendVideoTrack(track) {
    for (const peer of state.peers.values()) {
      const sender = senderFor(peer, 'video');
      if (!sender) continue;
      try {
        await sender.replaceTrack(track);
      } catch (e) {
        log('replaceTrack failed', peer.id, describeError(e));
      }
    }
  }

  async function toggleShare() {
    if (state.screen) {
      await stopShare();
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      notify('This browser cannot share the screen here.', 'error', 5000);
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15, max: 30 } }, audio: false });
    } catch (e) {
      log('getDisplayMedia failed', describeError(e));
      if (e && e.name !== 'NotAllowedError') notify(`Cannot share the screen: ${describeError(e)}`, 'error', 5000);
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (!track || state.phase !== 'joined') {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    try {
      track.contentHint = 'detail'; // keep the resolution, give up frame rate
    } catch {
      // not supported
    }
    state.screen = { stream, track };
    track.addEventListener('ended', () => {
      if (state.screen && state.screen.track === track) stopShare().catch(() => {});
    });
    await sendVideoTrack(track);
    ui.localVideo.srcObject = stream;
    playVideo(ui.localVideo);
    renderShare();
    for (const id of state.peers.keys()) sendState(id);
    log('screen sharing', track.label, JSON.stringify(track.getSettings()));
  }

  async function stopShare() {
    const screen = state.screen;
    if (!screen) return;
    state.screen = null;
    screen.stream.getTracks().forEach((t) => t.stop());
    await sendVideoTrack(localTrack('video'));
    ui.localVideo.srcObject = state.localStream;
    if (state.localStream) playVideo(ui.localVideo);
    renderShare();
    for (const id of state.peers.keys()) sendState(id);
    log('screen sharing stopped');
  }

  function renderShare() {
    const sharing = !!state.screen;
    ui.share.setAttribute('aria-pressed', String(sharing));
    ui.share.querySelector('.btn-text').textContent = sharing ? 'Stop sharing' : 'Share screen';
    ui.share.title = sharing ? 'Stop sharing your screen' : 'Share your screen';
    ui.localTile.classList.toggle('sharing', sharing);
    renderLocal();
  }

  // ---------------------------------------------------------------- devices

  async function refreshDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    fillDevices(ui.cameraSelect, devices.filter((d) => d.kind === 'videoinput'), localTrack('video'), 'Camera');
    fillDevices(ui.micSelect, devices.filter((d) => d.kind === 'audioinput'), localTrack('audio'), 'Microphone');
  }

  function fillDevices(select, list, track, label) {
    const current = track && track.getSettings ? track.getSettings().deviceId : '';
    select.textContent = '';
    list.forEach((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${label} ${i + 1}`;
      if (d.deviceId === current) o.selected = true;
      select.append(o);
    });
    select.disabled = list.length === 0 || !track;
  }

  async function switchDevice(kind, deviceId) {
    const old = localTrack(kind);
    if (!old || !deviceId || (old.getSettings && old.getSettings().deviceId === deviceId)) return;
    const constraints =
      kind === 'video'
        ? { video: { ...VIDEO_CONSTRAINTS, deviceId: { exact: deviceId } } }
        : { audio: { deviceId: { exact: deviceId } } };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      notify(`Cannot use that device: ${describeError(e)}`, 'error', 5000);
      refreshDevices().catch(() => {});
      return;
    }
    const track = stream.getTracks()[0];
    track.enabled = old.enabled;
    state.localStream.removeTrack(old);
    state.localStream.addTrack(track);
    old.stop();
    if (kind === 'audio' || !state.screen) {
      for (const peer of state.peers.values()) {
        const sender = senderFor(peer, kind);
        if (sender) await sender.replaceTrack(track).catch((e) => log('replaceTrack failed', describeError(e)));
      }
    }
    if (kind === 'video' && !state.screen) {
      ui.localVideo.srcObject = state.localStream;
      playVideo(ui.localVideo);
    }
    renderLocal();
    log('switched', kind, 'to', track.label);
  }

  // ---------------------------------------------------------------- stats panel

  function renderStatsPanel() {
    const box = ui.stats;
    box.textContent = '';
    if (state.peers.size === 0) {
      box.textContent = 'Nobody else is here yet.';
      return;
    }
    const dash = '—';
    for (const peer of state.peers.values()) {
      const s = peer.stats || {};
      const div = document.createElement('div');
      div.className = 'stats-peer';
      div.dataset.peerId = peer.id;
      const h = document.createElement('h3');
      h.textContent = peerLabel(peer);
      const dl = document.createElement('dl');
      const route = s.local
        ? `${s.local}${s.relayProtocol ? `/${s.relayProtocol}` : ''} ⇄ ${s.remote} (${s.protocol || '?'})`
        : dash;
      const rows = [
        ['pair', 'Candidate pair', route],
        ['rtt', 'Round trip', s.rttMs == null ? dash : `${s.rttMs} ms`],
        ['in', 'Bitrate in', s.kbpsIn == null ? dash : `${s.kbpsIn} kbit/s`],
        ['out', 'Bitrate out', s.kbpsOut == null ? dash : `${s.kbpsOut} kbit/s`],
        ['loss', 'Packet loss', s.lossPct == null ? dash : `${s.lossPct} %`],
        ['video', 'Video in', s.width ? `${s.width}×${s.height}${s.fps == null ? '' : ` @ ${s.fps} fps`}` : dash],
      ];
      for (const [key, label, value] of rows) {
        const dt = document.createElement('dt');
        dt.textContent = label;
        const dd = document.createElement('dd');
        dd.dataset.stat = key;
        dd.textContent = value;
        dl.append(dt, dd);
      }
      div.append(h, dl);
      box.append(div);
    }
  }

  // ---------------------------------------------------------------- local media

  async function getMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return {
        stream: new MediaStream(),
        note: 'This page cannot use a camera or microphone here (it needs HTTPS or localhost): you joined receive-only.',
      };
    }
    const gum = (c) => navigator.mediaDevices.getUserMedia(c);
    const video = VIDEO_CONSTRAINTS;
    let firstError;
    try {
      return { stream: await gum({ audio: true, video }), note: null };
    } catch (e) {
      firstError = e;
      log('camera + microphone failed', describeError(e));
    }
    try {
      return {
        stream: await gum({ audio: true }),
        note: `No camera (${describeError(firstError)}): you joined with audio only.`,
      };
    } catch (e) {
      log('microphone failed', describeError(e));
    }
    try {
      return {
        stream: await gum({ video }),
        note: `No microphone (${describeError(firstError)}): you joined with video only.`,
      };
    } catch (e) {
      log('camera failed', describeError(e));
    }
    return {
      stream: new MediaStream(),
      note: `No camera or microphone (${describeError(firstError)}): you joined receive-only. You can see and hear the others; they cannot see or hear you.`,
    };
  }

  function renderLocal() {
    const audio = localTrack('audio');
    const video = localTrack('video');
    ui.localTile.classList.toggle('no-video', !state.screen && (!video || !video.enabled));
    ui.mute.disabled = !audio;
    ui.camera.disabled = !video;
    const muted = !!audio && !audio.enabled;
    const camOff = !!video && !video.enabled;
    ui.mute.setAttribute('aria-pressed', String(muted));
    ui.mute.querySelector('.btn-text').textContent = muted ? 'Unmute' : 'Mute';
    ui.mute.title = audio ? (muted ? 'Unmute microphone' : 'Mute microphone') : 'No microphone';
    ui.camera.setAttribute('aria-pressed', String(camOff));
    ui.camera.querySelector('.btn-text').textContent = camOff ? 'Camera on' : 'Camera off';
    ui.camera.title = video ? (camOff ? 'Turn camera on' : 'Turn camera off') : 'No camera';
    const flags = [];
    if (!audio) flags.push('no mic');
    else if (muted) flags.push('muted');
    ui.localTile.querySelector('.tile-flags').textContent = flags.join(' · ');
  }

  function localState() {
    const audio = localTrack('audio');
    const video = localTrack('video');
    return { audio: !!audio && audio.enabled, video: !!state.screen || (!!video && video.enabled), screen: !!state.screen };
  }

  function sendState(to) {
    signal(to, { state: localState() });
  }

  function toggle(kind) {
    const track = localTrack(kind);
    if (!track) return;
    track.enabled = !track.enabled;
    renderLocal();
    for (const id of state.peers.keys()) sendState(id);
  }

  // ---------------------------------------------------------------- join / leave

  async function join(ev) {
    ev.preventDefault();
    if (state.phase !== 'idle') return;
    const room = ui.room.value.trim();
    if (!ROOM_RE.test(room)) {
      ui.room.classList.add('invalid');
      showFormError('The room name must be 1 to 64 letters, digits, “_” or “-”.');
      ui.room.focus();
      return;
    }
    ui.room.classList.remove('invalid');
    showFormError('');
    if (typeof RTCPeerConnection !== 'function') {
      showFormError('This browser does not support WebRTC.');
      return;
    }
    const name = cleanName(ui.name.value);
    state.name = name;
    state.relayOnly = ui.relayOnly.checked;
    const session = ++state.session;
    state.phase = 'media';
    setFormDisabled(true);
    setStatus('Starting camera and microphone…', 'connecting');

    const { stream, note } = await getMedia();
    if (session !== state.session) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    state.localStream = stream;
    ui.localVideo.srcObject = stream;
    playVideo(ui.localVideo);
    ui.localName.textContent = name ? `${name} (you)` : 'You';
    ui.localTile.querySelector('.avatar').dataset.initials = initials(name || 'You');
    ui.mediaNote.textContent = note || '';
    ui.mediaNote.hidden = !note;
    renderLocal();
    connect(room, name, session);
  }

  function failJoin(text) {
    state.phase = 'idle';
    setFormDisabled(false);
    showFormError(text);
    setStatus('Not connected', 'error');
  }

  function setFormDisabled(disabled) {
    for (const input of [ui.name, ui.room, ui.relayOnly, ui.join]) input.disabled = disabled;
    ui.join.textContent = disabled ? 'Joining…' : 'Join';
  }

  // Ends the call: closes every peer connection and the socket, stops the
  // camera, and shows the lobby again.
  function teardown() {
    state.session += 1;
    const ws = state.ws;
    state.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN && state.phase === 'joined' && !state.reconnecting) {
      // A leave, so the room does not wait out a resume grace period.
      try {
        ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        // the socket is closing anyway
      }
    }
    state.reconnecting = false;
    state.resume = null;
    state.counting = false;
    clearInterval(state.ackTimer);
    if (state.screen) {
      state.screen.stream.getTracks().forEach((t) => t.stop());
      state.screen = null;
      renderShare();
    }
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'leaving');
      } catch {
        // already closed
      }
    }
    outbox.length = 0;
    for (const id of Array.from(state.peers.keys())) removePeer(id, false);
    clearTransfers();
    state.chat = [];
    ui.chatLog.textContent = '';
    state.unread = 0;
    renderUnread();
    closePanel();
    if (state.localStream) state.localStream.getTracks().forEach((t) => t.stop());
    state.localStream = null;
    ui.localVideo.srcObject = null;
    state.phase = 'idle';
    state.myId = null;
    state.room = null;
    state.iceServers = [];
    ui.call.hidden = true;
    ui.controls.hidden = true;
    ui.mediaNote.hidden = true;
    ui.lobby.hidden = false;
    setFormDisabled(false);
    setStatus('Not connected');
  }

  function leave() {
    if (state.phase === 'idle') return;
    const room = state.room;
    teardown();
    if (room) notify(`You left room ${room}.`, 'info', 3000);
  }

  async function copyLink() {
    const link = inviteLink();
    try {
      await navigator.clipboard.writeText(link);
      notify('Invite link copied.', 'ok', 2500);
    } catch {
      notify(`Invite link: ${link}`, 'info', 12000);
    }
  }

  // ---------------------------------------------------------------- wiring

  ui.form.addEventListener('submit', (ev) => {
    join(ev).catch((e) => {
      log('join failed', describeError(e));
      teardown();
      failJoin(`Could not join: ${describeError(e)}`);
    });
  });
  ui.room.addEventListener('input', () => {
    ui.room.classList.remove('invalid');
    showFormError('');
  });
  ui.leave.addEventListener('click', leave);
  ui.mute.addEventListener('click', () => toggle('audio'));
  ui.camera.addEventListener('click', () => toggle('video'));
  ui.copyLink.addEventListener('click', () => {
    copyLink().catch(() => {});
  });
  // For tests and the console: an ICE restart towards peer `id` (the
  // offerer side of that pair must call it).
  state.restartIce = (id) => {
    const peer = state.peers.get(id);
    if (!peer) return false;
    peer.restarts = 0;
    restartIce(peer, 'requested');
    return true;
  };
  ui.share.addEventListener('click', () => {
    toggleShare().catch((e) => log('screen share failed', describeError(e)));
  });
  ui.panel.addEventListener('click', () => {
    if (ui.side.hidden) openPanel(state.panelTab);
    else closePanel();
  });
  ui.sideClose.addEventListener('click', closePanel);
  for (const button of ui.side.querySelectorAll('.side-tab')) {
    button.addEventListener('click', () => openPanel(button.dataset.tab));
  }
  ui.chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendChat(ui.chatInput.value);
    ui.chatInput.value = '';
  });
  ui.fileInput.addEventListener('change', () => {
    const file = ui.fileInput.files && ui.fileInput.files[0];
    if (file) sendFile(file, ui.fileTo.value);
    ui.fileInput.value = '';
  });
  // The whole panel takes a dropped file (the drop zone is inside it).
  ui.side.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    ui.drop.classList.add('over');
  });
  ui.side.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
  ui.side.addEventListener('drop', (ev) => {
    ev.preventDefault();
    ui.drop.classList.remove('over');
    const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (file) {
      if (state.panelTab !== 'files') openPanel('files');
      sendFile(file, ui.fileTo.value);
    }
  });
  ui.cameraSelect.addEventListener('change', () => {
    switchDevice('video', ui.cameraSelect.value).catch((e) => log('camera switch failed', describeError(e)));
  });
  ui.micSelect.addEventListener('change', () => {
    switchDevice('audio', ui.micSelect.value).catch((e) => log('microphone switch failed', describeError(e)));
  });
  if (navigator.mediaDevices && 'ondevicechange' in navigator.mediaDevices) {
    navigator.mediaDevices.addEventListener('devicechange', () => {
      if (state.phase === 'joined') refreshDevices().catch(() => {});
    });
  }
  document.addEventListener('visibilitychange', () => {
    if (chatVisible()) markChatRead();
  });
  window.addEventListener('pagehide', () => {
    if (state.phase !== 'idle') teardown();
  });

  const roomParam = params.get('room');
  if (roomParam && ROOM_RE.test(roomParam)) ui.room.value = roomParam;
  (ui.room.value ? ui.name : ui.room).focus();
  setStatus('Not connected');
})();
