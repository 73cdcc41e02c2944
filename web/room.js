// Joining and leaving a room: the lobby form, the camera and microphone
// asked for, the signaling client (signaling.js) and what the page does
// with each server message, and the teardown that shows the lobby again.

import {
  applyIceServers,
  createPeer,
  onSignal,
  recoverBrokenPeers,
  removeAllPeers,
  removePeer,
} from './call.js';
import { clearChat } from './chat.js';
import { clearTransfers, renderFileTargets } from './files.js';
import { describeError, log } from './log.js';
import { getMedia, renderLocal } from './media.js';
import { closePanel } from './panel.js';
import { dropShare } from './screen.js';
import { SignalingClient, signalingUrl } from './signaling.js';
import { state } from './state.js';
import { initials, notify, peerLabel, playVideo, setStatus, showFormError, ui, updateStatus } from './ui.js';

export const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_NAME = 64;

// The invitation's ?token=…, for the signaling URL and the invite link.
const token = new URLSearchParams(location.search).get('token');

export const signaling = new SignalingClient({
  url: signalingUrl(token),
  on: {
    open: () => setStatus(`Joining room ${signaling.room}…`, 'connecting'),
    joined: onJoined,
    message: onServerMessage,
    iceServers: onIceServers,
    reconnecting: () => {
      setStatus('Connection to the server lost; reconnecting…', 'connecting');
      notify('Lost the connection to the server; reconnecting…', 'warn', 4000);
    },
    resumed: () => {
      updateStatus();
      notify('Reconnected to the server.', 'ok', 3000);
      // A peer connection that failed meanwhile gets an ICE restart now.
      recoverBrokenPeers();
    },
    resumeFailed: () => {
      removeAllPeers();
      state.phase = 'connecting';
      notify('The server had forgotten this call; joining again.', 'warn', 5000);
    },
    closed: onClosed,
  },
});

// The lobby form was submitted.
export async function join(ev) {
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

  setStatus('Connecting to the server…', 'connecting');
  try {
    signaling.join(room, name);
  } catch (e) {
    failJoin(`Cannot open the signaling connection: ${describeError(e)}`);
    return;
  }
  state.phase = 'connecting';
}

function cleanName(raw) {
  // The server refuses control characters and more than 64 characters.
  const noControls = raw.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim();
  return Array.from(noControls).slice(0, MAX_NAME).join('');
}

export function failJoin(text) {
  state.phase = 'idle';
  setFormDisabled(false);
  showFormError(text);
  setStatus('Not connected', 'error');
}

function setFormDisabled(disabled) {
  for (const input of [ui.name, ui.room, ui.relayOnly, ui.join]) input.disabled = disabled;
  ui.join.textContent = disabled ? 'Joining…' : 'Join';
}

function onJoined(msg) {
  if (state.phase !== 'connecting') return;
  state.phase = 'joined';
  state.myId = msg.id;
  state.room = msg.room;
  state.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
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
  // The newcomer makes the offers.
  for (const p of msg.peers || []) {
    if (p && p.id && p.id !== state.myId) createPeer(p.id, p.name, true);
  }
  updateStatus();
  renderFileTargets();
}

function onServerMessage(msg) {
  switch (msg.type) {
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

function onIceServers(iceServers) {
  state.iceServers = iceServers;
  const turn = iceServers.find((s) => s.username);
  state.iceRefreshes.push({ at: Date.now(), username: turn ? turn.username : null });
  if (state.iceRefreshes.length > 20) state.iceRefreshes.shift();
  applyIceServers(iceServers);
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

// The signaling session ended without a leave (signaling.js, on.closed).
function onClosed(why, reason) {
  const detail = reason ? ` (${reason})` : '';
  teardown();
  if (why === 'unreachable') {
    failJoin(`Could not reach the signaling server${detail}.`);
    return;
  }
  setStatus('Disconnected from the server', 'error');
  if (why === 'lost') notify(`Lost the connection to the server${detail}. Join again to reconnect.`, 'error', 10000);
  else if (why === 'gave-up') notify('Could not reconnect to the server. Join again.', 'error', 10000);
}

// Ends the call: leaves the room, closes every peer connection, stops the
// camera, and shows the lobby again.
export function teardown() {
  state.session += 1;
  signaling.close();
  dropShare();
  removeAllPeers();
  clearTransfers();
  clearChat();
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

export function leave() {
  if (state.phase === 'idle') return;
  const room = state.room;
  teardown();
  if (room) notify(`You left room ${room}.`, 'info', 3000);
}

function inviteLink() {
  const url = new URL(location.pathname, location.origin);
  url.searchParams.set('room', state.room || ui.room.value.trim());
  if (token) url.searchParams.set('token', token);
  return url.toString();
}

export async function copyLink() {
  const link = inviteLink();
  try {
    await navigator.clipboard.writeText(link);
    notify('Invite link copied.', 'ok', 2500);
  } catch {
    notify(`Invite link: ${link}`, 'info', 12000);
  }
}
