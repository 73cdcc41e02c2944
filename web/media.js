// Local media: the camera and microphone asked for on join (with what is
// left when one is missing or refused), the local tile and the mute and
// camera buttons, the {audio, video, screen} state told to the peers, and
// the devices tab (another camera or microphone, swapped into every call).

import { describeError, log } from './log.js';
import { state } from './state.js';
import { notify, playVideo, ui } from './ui.js';

const VIDEO_CONSTRAINTS = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 30, max: 30 } };

export function localTrack(kind) {
  const s = state.localStream;
  return s ? (kind === 'audio' ? s.getAudioTracks()[0] : s.getVideoTracks()[0]) || null : null;
}

// The sender of the transceiver that carries `kind` to `peer` (whatever
// track it sends).
export function senderFor(peer, kind) {
  const t = peer.pc
    .getTransceivers()
    .find((x) => !x.stopped && x.receiver && x.receiver.track && x.receiver.track.kind === kind);
  return t ? t.sender : null;
}

// Camera and microphone, else either, else nothing (receive-only), with a
// note that says what is missing.
export async function getMedia() {
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

export function renderLocal() {
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

// What the peers are told in {state: …} signals.
export function localState() {
  const audio = localTrack('audio');
  const video = localTrack('video');
  return { audio: !!audio && audio.enabled, video: !!state.screen || (!!video && video.enabled), screen: !!state.screen };
}

// Mutes or unmutes the microphone ('audio') or turns the camera ('video')
// off or on; false if there is no such track (the peers need not be told).
export function toggle(kind) {
  const track = localTrack(kind);
  if (!track) return false;
  track.enabled = !track.enabled;
  renderLocal();
  return true;
}

// ---------------------------------------------------------------- devices

export async function refreshDevices() {
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

// Replaces the local `kind` track with one from `deviceId`, in the local
// stream and on every peer connection (the camera's only while the screen
// is not shared in its place).
export async function switchDevice(kind, deviceId) {
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
