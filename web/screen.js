// Screen sharing: the captured screen takes the camera's place on every
// peer connection's video sender (replaceTrack, no renegotiation) and in
// the local tile, and the peers are told {screen: true}; stopping (the
// button or the browser's own "stop sharing") puts the camera back.

import { sendStateToAll } from './call.js';
import { describeError, log } from './log.js';
import { localTrack, renderLocal, senderFor } from './media.js';
import { state } from './state.js';
import { notify, playVideo, ui } from './ui.js';

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

export async function toggleShare() {
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
  sendStateToAll();
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
  sendStateToAll();
  log('screen sharing stopped');
}

// Stops the capture without telling anyone (the call is ending).
export function dropShare() {
  if (!state.screen) return;
  state.screen.stream.getTracks().forEach((t) => t.stop());
  state.screen = null;
  renderShare();
}

function renderShare() {
  const sharing = !!state.screen;
  ui.share.setAttribute('aria-pressed', String(sharing));
  ui.share.querySelector('.btn-text').textContent = sharing ? 'Stop sharing' : 'Share screen';
  ui.share.title = sharing ? 'Stop sharing your screen' : 'Share your screen';
  ui.localTile.classList.toggle('sharing', sharing);
  renderLocal();
}
