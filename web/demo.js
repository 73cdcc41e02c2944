// turnpike call demo: a full-mesh WebRTC call signaled over this server's
// /ws endpoint, with ICE servers (STUN + TURN with fresh credentials)
// handed out by the server on join.
//
// Signaling rules: the newcomer offers to every peer listed in `joined`;
// peers already in the room only answer, so offers never cross. The
// `data` of a signal message is one of
//   {description: RTCSessionDescriptionInit}
//   {candidate: RTCIceCandidateInit}          (trickle ICE)
//   {state: {audio: bool, video: bool}}      (mic / camera on or off)
//
// For tests, the state lives on window.turnpikeDemo (myId, peers: Map of
// id -> {pc, name, ...}).

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
  };

  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const MAX_NAME = 64;
  // The server allows 50 messages/s (bursts of 100); stay well below.
  const SEND_RATE = 25;
  const SEND_BURST = 40;
  const MAX_PENDING_CANDIDATES = 200;
  const MAX_ICE_RESTARTS = 2;
  const STATS_INTERVAL_MS = 1000;

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
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      log('not sent (socket not open)', message.type);
      return;
    }
    outbox.push(JSON.stringify(message));
    drain();
  }

  function drain() {
    const now = performance.now();
    tokens = Math.min(SEND_BURST, tokens + ((now - lastRefill) / 1000) * SEND_RATE);
    lastRefill = now;
    const ws = state.ws;
    while (outbox.length > 0 && tokens >= 1 && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(outbox.shift());
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

  function connect(room, name, session) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${scheme}//${location.host}/ws`;
    if (token) url += `?token=${encodeURIComponent(token)}`;
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
      send({ type: 'join', room, name: name || undefined });
    };
    ws.onmessage = (ev) => {
      if (state.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        log('ignored a frame that is not JSON');
        return;
      }
      try {
        onServerMessage(msg);
      } catch (e) {
        log('error handling', msg && msg.type, describeError(e));
      }
    };
    ws.onerror = () => log('websocket error');
    ws.onclose = (ev) => {
      if (state.ws !== ws) return; // closed by us
      log('websocket closed', ev.code, ev.reason || '');
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

  function onServerMessage(msg) {
    switch (msg.type) {
      case 'joined':
        onJoined(msg);
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
    updateStatus();
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
      closed: false,
      statsTimer: null,
      statsBusy: false,
      remote: { audio: true, video: true },
      selected: null, // {local, remote, ...} of the selected candidate pair
      lastBytes: null,
    };
    tile.querySelector('.tile-name').textContent = peerLabel(peer);
    tile.querySelector('.avatar').dataset.initials = initials(peer.name || '?');
    tile.classList.add('no-video');
    ui.grid.append(tile);
    state.peers.set(id, peer);

    pc.onicecandidate = (ev) => {
      if (ev.candidate && !peer.closed) signal(id, { candidate: ev.candidate.toJSON() });
    };
    pc.onicecandidateerror = (ev) => {
      log('ice candidate error', id, ev.url || '', ev.errorCode, ev.errorText || '', `${ev.address || ''}:${ev.port || ''}`);
    };
    pc.oniceconnectionstatechange = () => onIceState(peer);
    pc.onconnectionstatechange = () => log('connection state', id, pc.connectionState);
    pc.onicegatheringstatechange = () => log('ice gathering', id, pc.iceGatheringState);
    pc.ontrack = (ev) => onTrack(peer, ev);

    if (initiator) {
      addLocalMediaAsOfferer(peer);
      makeOffer(peer, false);
    }
    peer.statsTimer = setInterval(() => {
      updateStats(peer).catch((e) => log('stats failed', describeError(e)));
    }, STATS_INTERVAL_MS);
    renderIceState(peer);
    updateStatus();
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
      const track = localTrack(kind);
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
  }

  async function onDescription(peer, description) {
    const pc = peer.pc;
    if (description.type === 'offer') {
      await pc.setRemoteDescription(description);
      if (peer.closed) return;
      if (!peer.tracksAdded) {
        // addTrack reuses the transceivers the offer created.
        const stream = state.localStream;
        if (stream) for (const track of stream.getTracks()) pc.addTrack(track, stream);
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
    peer.remote = { audio: remote.audio !== false, video: remote.video !== false };
    renderRemoteVideo(peer);
  }

  function renderRemoteVideo(peer) {
    const video = peer.stream.getVideoTracks().find((t) => t.readyState === 'live' && !t.muted);
    peer.tile.classList.toggle('no-video', !video || !peer.remote.video);
    const flags = [];
    if (!peer.remote.audio) flags.push('muted');
    peer.flags.textContent = flags.join(' · ');
  }

  function onIceState(peer) {
    const s = peer.pc.iceConnectionState;
    log('ice state', peer.id, s);
    renderIceState(peer);
    if (s === 'failed' && peer.initiator && !peer.closed) {
      if (peer.restarts < MAX_ICE_RESTARTS) {
        peer.restarts += 1;
        notify(`Connection to ${peerLabel(peer)} failed; retrying…`, 'warn');
        makeOffer(peer, true);
      } else {
        notify(`Could not connect to ${peerLabel(peer)}.`, 'error', 8000);
      }
    } else if (s === 'failed') {
      notify(`Connection to ${peerLabel(peer)} failed.`, 'warn');
    }
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
      if (pair && typeof pair.bytesReceived === 'number') {
        if (peer.lastBytes) {
          const ms = pair.timestamp - peer.lastBytes.t;
          if (ms > 0) kbps = ((pair.bytesReceived - peer.lastBytes.b) * 8) / ms;
        }
        peer.lastBytes = { b: pair.bytesReceived, t: pair.timestamp };
      }
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

  // ---------------------------------------------------------------- local media

  async function getMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return {
        stream: new MediaStream(),
        note: 'This page cannot use a camera or microphone here (it needs HTTPS or localhost): you joined receive-only.',
      };
    }
    const gum = (c) => navigator.mediaDevices.getUserMedia(c);
    const video = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 30, max: 30 } };
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
    ui.localTile.classList.toggle('no-video', !video || !video.enabled);
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
    return { audio: !!audio && audio.enabled, video: !!video && video.enabled };
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
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      try {
        state.ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        // the socket is closing anyway
      }
    }
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
  window.addEventListener('pagehide', () => {
    if (state.phase !== 'idle') teardown();
  });

  const roomParam = params.get('room');
  if (roomParam && ROOM_RE.test(roomParam)) ui.room.value = roomParam;
  (ui.room.value ? ui.name : ui.room).focus();
  setStatus('Not connected');
})();
