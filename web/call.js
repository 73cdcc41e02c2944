// The peer connections: one RTCPeerConnection per peer of the room (a full
// mesh), each with its tile, its two data channels and its stats.
//
// Negotiation: the newcomer offers to every peer listed in `joined`; peers
// already in the room only answer, so offers never cross and no
// "perfect negotiation" is needed. The `data` of a signal message is one of
//   {description: RTCSessionDescriptionInit}
//   {candidate: RTCIceCandidateInit}          (trickle ICE)
//   {state: {audio: bool, video: bool, screen: bool}}  (mic / camera / screen)
//   {restart: true}                          (answerer asks for an ICE restart)
// and each peer's signals are handled one at a time, in order.
//
// Recovery: a connection that fails, or stays 'disconnected' for
// DISCONNECTED_RESTART_MS, gets an ICE restart (a new offer with fresh ICE
// credentials, gathered with the current iceServers): the offerer makes
// it, the answerer asks for it; at most MAX_ICE_RESTARTS in a row, one at
// a time. While the signaling socket is being resumed nothing is
// restarted; what broke meanwhile is restarted on `resumed`.

import { attachFilesChannel, closeTransfersOf, renderFileTargets } from './files.js';
import { onChatMessage } from './chat.js';
import { describeError, log } from './log.js';
import { localState, localTrack } from './media.js';
import { state } from './state.js';
import { renderIceState, renderStatsPanel, startStats } from './stats.js';
import { initials, notify, peerLabel, playVideo, ui, updateStatus } from './ui.js';

const MAX_PENDING_CANDIDATES = 200;
const MAX_ICE_RESTARTS = 2;
// A connection still 'disconnected' after this long is restarted:
// Chromium takes far longer to call it 'failed', and a relay that went
// away (a TURN server restarted, an allocation ended) never comes back.
// Shorter blips recover by themselves.
const DISCONNECTED_RESTART_MS = 5000;

// The signaling client (signaling.js) the signals go through.
let signaling = null;

export function useSignaling(client) {
  signaling = client;
}

function signal(to, data) {
  signaling.signal(to, data);
}

export function createPeer(id, name, initiator) {
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
    makingOffer: false,
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
  startStats(peer);
  renderIceState(peer);
  updateStatus();
  renderFileTargets();
  return peer;
}

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
  attachFilesChannel(peer);
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
  // Until setLocalDescription, signalingState still says 'stable': this
  // flag keeps a second restart asked for meanwhile (both sides may ask
  // at once) from making a second offer that crosses the first.
  peer.makingOffer = true;
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
  } finally {
    peer.makingOffer = false;
  }
}

// A signal message's data from peer `from`.
export function onSignal(from, data) {
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

// Tells peer `to` whether this side's microphone, camera and screen are on.
function sendState(to) {
  signal(to, { state: localState() });
}

// The same, to every peer.
export function sendStateToAll() {
  for (const id of state.peers.keys()) sendState(id);
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
      if (!signaling.reconnecting) recoverPeer(peer);
    }, DISCONNECTED_RESTART_MS);
    return;
  }
  if (s !== 'failed') return;
  if (signaling.reconnecting) return; // recovered once the signaling is back
  recoverPeer(peer);
}

// A connection that needs a restart: failed, or disconnected for longer
// than DISCONNECTED_RESTART_MS.
function isBroken(peer) {
  const s = peer.pc.iceConnectionState;
  return s === 'failed' || (s === 'disconnected' && !peer.disconnectedTimer);
}

// After a resume: a peer connection that broke meanwhile gets its restart.
export function recoverBrokenPeers() {
  for (const peer of state.peers.values()) {
    if (isBroken(peer)) recoverPeer(peer);
  }
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
export function restartIce(peer, why) {
  if (peer.closed) return;
  // Both sides may ask at once; one restart in flight is enough.
  if (peer.makingOffer || peer.pc.signalingState !== 'stable') {
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

// Fresh iceServers (an ice-servers push) for every peer connection: relays
// already allocated keep working; the next restart gathers with these.
export function applyIceServers(iceServers) {
  for (const peer of state.peers.values()) {
    try {
      peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers });
    } catch (e) {
      log('setConfiguration failed', peer.id, describeError(e));
    }
  }
}

export function removePeer(id, announce) {
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

export function removeAllPeers() {
  for (const id of Array.from(state.peers.keys())) removePeer(id, false);
}
