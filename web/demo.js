// turnpike call demo: a full-mesh WebRTC call signaled over this server's
// /ws endpoint, with ICE servers (STUN + TURN with fresh credentials)
// handed out by the server on join. Plain ES modules, no build step, all
// served from the binary (src/http/page.rs) under the page's strict
// Content-Security-Policy: no inline script or style anywhere.
//
// This module is the entry point (index.html loads it): it wires the
// page's buttons and forms to the modules below and exposes the page's
// state for tests and the console.
//
//   signaling.js  the /ws client, protocol v1.1 (docs/signaling.md): join,
//                 resume after a blip, fresh TURN credentials
//   room.js       joining and leaving: lobby, server messages, teardown
//   call.js       one RTCPeerConnection per peer: offers, answers, trickle
//                 ICE, ICE restarts
//   media.js      camera and microphone, mute, devices
//   screen.js     screen sharing in place of the camera
//   chat.js       chat over the "chat" data channel
//   files.js      file transfers over the "files" data channel
//   stats.js      getStats() every second: tile badges and the stats tab
//   panel.js      the side panel and its tabs
//   ui.js         the page's elements, status line and notices
//   state.js      the shared state (window.turnpikeDemo)
//   log.js        the event log
//
// For tests, the state lives on window.turnpikeDemo (myId, peers: Map of
// id -> {pc, name, ...}, chat, transfers, resumes, iceRefreshes, ...).

import { restartIce, sendStateToAll, useSignaling } from './call.js';
import { chatVisible, markChatRead, sendChat } from './chat.js';
import { sendFile } from './files.js';
import { describeError, log } from './log.js';
import { refreshDevices, switchDevice, toggle } from './media.js';
import { closePanel, openPanel } from './panel.js';
import { copyLink, failJoin, join, leave, ROOM_RE, signaling, teardown } from './room.js';
import { toggleShare } from './screen.js';
import { state } from './state.js';
import { setStatus, showFormError, ui } from './ui.js';

window.turnpikeDemo = state;
// The signaling client's socket and counters, read-only.
for (const key of ['ws', 'resume', 'rx', 'acked', 'tx', 'txLog', 'counting', 'reconnecting', 'resumes']) {
  Object.defineProperty(state, key, { enumerable: true, get: () => signaling[key] });
}
// For tests and the console: an ICE restart towards peer `id` (the
// offerer side of that pair must call it).
state.restartIce = (id) => {
  const peer = state.peers.get(id);
  if (!peer) return false;
  peer.restarts = 0;
  restartIce(peer, 'requested');
  return true;
};

useSignaling(signaling);

// Nothing of ours should end as an unhandled rejection; if something
// does anyway, it is logged rather than lost.
window.addEventListener('unhandledrejection', (ev) => {
  log('unhandled rejection', describeError(ev.reason));
});

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
ui.mute.addEventListener('click', () => {
  if (toggle('audio')) sendStateToAll();
});
ui.camera.addEventListener('click', () => {
  if (toggle('video')) sendStateToAll();
});
ui.copyLink.addEventListener('click', () => {
  copyLink().catch(() => {});
});
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

const roomParam = new URLSearchParams(location.search).get('room');
if (roomParam && ROOM_RE.test(roomParam)) ui.room.value = roomParam;
(ui.room.value ? ui.name : ui.room).focus();
setStatus('Not connected');
