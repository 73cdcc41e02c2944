// File transfers over each peer connection's negotiated "files" data
// channel (id 1), peer to peer: {t: 'file-offer', id, name, size, type},
// then the file in binary messages of CHUNK bytes, then
// {t: 'file-end', id}; either side may send {t: 'file-cancel', id}. One
// file at a time per channel and direction; the sender waits while more
// than BUFFER_HIGH is buffered. Transfers are kept in state.transfers
// (the newest MAX_TRANSFERS_SHOWN) and shown in the files tab.

import { describeError, log } from './log.js';
import { state } from './state.js';
import { notify, peerLabel, ui } from './ui.js';

const CHUNK = 16 * 1024;
const BUFFER_HIGH = 1024 * 1024;
const BUFFER_LOW = 256 * 1024;
// Received chunks are folded into a Blob every BLOB_PART bytes, so the
// browser may keep big files on disk instead of in the page's memory.
const BLOB_PART = 8 * 1024 * 1024;
const MAX_TRANSFERS_SHOWN = 50;

const ACTIVE = ['waiting', 'sending', 'receiving'];

let transferSeq = 0;

// Takes over `peer.files`, a new data channel.
export function attachFilesChannel(peer) {
  peer.files.binaryType = 'arraybuffer';
  peer.files.bufferedAmountLowThreshold = BUFFER_LOW;
  peer.files.onopen = () => {
    log('files channel open', peer.id);
    pumpFiles(peer);
  };
  peer.files.onmessage = (ev) => onFileMessage(peer, ev.data);
  peer.files.onclose = () => closeTransfersOf(peer);
}

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
      if (ACTIVE.includes(old.state)) continue;
      if (old.url) URL.revokeObjectURL(old.url);
      old.blob = null;
      old.el.li.remove();
      state.transfers.delete(key);
    }
  }
  renderTransfer(t, true);
  return t;
}

// Progress is re-rendered at most every 100 ms unless `force`.
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
  cancel.hidden = !ACTIVE.includes(t.state);
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

// The "Send to" list: everyone, then each peer.
export function renderFileTargets() {
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
export function sendFile(file, toId) {
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
  if (!ACTIVE.includes(t.state)) return;
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

// The peer's connection closed: whatever was under way with it failed.
export function closeTransfersOf(peer) {
  for (const t of state.transfers.values()) {
    if (t.peer === peer && ACTIVE.includes(t.state)) {
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

// Forgets every transfer and lets go of the received files (the call ended).
export function clearTransfers() {
  for (const t of state.transfers.values()) {
    if (t.url) URL.revokeObjectURL(t.url);
  }
  state.transfers.clear();
  ui.transfers.textContent = '';
}
