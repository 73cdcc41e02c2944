// The page's elements (index.html) and what every part of the page shows
// with them: the status line, notices, the form's error, a peer's label and
// initials, and a <video> that must play.

import { describeError, log } from './log.js';
import { state } from './state.js';

export const $ = (id) => document.getElementById(id);

export const ui = {
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

export function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.status.className = `status${kind ? ` is-${kind}` : ''}`;
}

export function notify(text, kind = 'info', ms = 5000) {
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

export function showFormError(text) {
  ui.formError.textContent = text;
  ui.formError.hidden = !text;
}

export function initials(name) {
  // The first letter or digit of the first two words that have one.
  const letters = (name || '')
    .split(/\s+/)
    .map((word) => (word.match(/[\p{L}\p{N}]/u) || [''])[0])
    .filter(Boolean);
  return letters.length ? letters.slice(0, 2).join('').toUpperCase() : '?';
}

export function peerLabel(peer) {
  return peer.name || `Guest ${peer.id.slice(0, 4)}`;
}

// The grid's size and, once joined, "Joined room R as ID · n peers" (the
// browser tests wait for "Joined room").
export function updateStatus() {
  ui.grid.dataset.count = String(1 + state.peers.size);
  if (state.phase !== 'joined') return;
  const n = state.peers.size;
  setStatus(`Joined room ${state.room} as ${state.myId} · ${n} peer${n === 1 ? '' : 's'}`, 'joined');
  ui.alone.hidden = n > 0;
}

export function playVideo(video) {
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
