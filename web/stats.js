// Call statistics: every second, each peer connection's getStats() is read
// for the selected candidate pair (relay or not, over UDP or TCP), round
// trip, bitrates, loss and the incoming video. They are shown on the
// peer's tile (the badge "relay ⇄ relay", the ICE state with its round
// trip) and in the stats tab; peer.selected and peer.stats keep them for
// the console and the tests.

import { describeError, log } from './log.js';
import { state } from './state.js';
import { peerLabel, ui } from './ui.js';

const STATS_INTERVAL_MS = 1000;

// Reads `peer`'s stats every second until peer.statsTimer is cleared.
export function startStats(peer) {
  peer.statsTimer = setInterval(() => {
    updateStats(peer).catch((e) => log('stats failed', describeError(e)));
  }, STATS_INTERVAL_MS);
}

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

// The tile's ICE state line, with the round trip once connected.
export function renderIceState(peer) {
  const s = peer.pc.iceConnectionState;
  const rtt = peer.selected && typeof peer.selected.rtt === 'number' ? ` · ${Math.round(peer.selected.rtt * 1000)} ms` : '';
  peer.iceState.textContent = `${s}${s === 'connected' || s === 'completed' ? rtt : ''}`;
  peer.iceState.className = `ice-state state-${s}`;
}

// The stats tab: one block per peer, each value in a <dd data-stat=…>.
export function renderStatsPanel() {
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
