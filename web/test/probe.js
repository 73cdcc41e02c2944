// The test of one TURN URL, in this browser: gather relay candidates only
// (`iceTransportPolicy: "relay"`), then connect two peer connections of
// this page to each other through the relay and push data: a round trip,
// a throughput and a loss. The verdict is "pass" only if data flowed over
// a relay <-> relay pair; otherwise the reason says what failed, from what
// the browser reports (`icecandidateerror`'s code) and from what the other
// URLs of the same host did.

const GATHER_MS = 10_000;
const CONNECT_MS = 15_000;
const PINGS = 10;
const BULK_BYTES = 1024 * 1024;
const CHUNK = 16 * 1024;
const LOSSY_MESSAGES = 200;
const LOSSY_GAP_MS = 5;

export class TestError extends Error {}

/** What a TURN URL names: scheme, host, port and transport. */
export function describe(url) {
  const match = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/i.exec(url.trim());
  if (!match) throw new TestError(`not a TURN URL: ${url} (turn:host[:port][?transport=udp|tcp] or turns:…)`);
  const scheme = match[1].toLowerCase();
  const secure = scheme === 'turns';
  const transport = secure ? 'tls' : (match[4] || 'udp').toLowerCase();
  const port = Number(match[3] || (secure ? 5349 : 3478));
  return { url: url.trim(), scheme, host: match[2], port, transport };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when `check()` holds (polled), or rejects after `ms`. */
async function until(check, ms, what) {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new TestError(what);
    await sleep(20);
  }
}

/** Relay candidates for `iceServer`, and the errors on the way. */
async function gather(iceServer) {
  const pc = new RTCPeerConnection({ iceServers: [iceServer], iceTransportPolicy: 'relay' });
  const relays = [];
  const errors = [];
  pc.onicecandidateerror = (e) => errors.push({ code: e.errorCode, text: e.errorText });
  pc.onicecandidate = (e) => {
    if (e.candidate?.type === 'relay') relays.push(`${e.candidate.address}:${e.candidate.port}`);
  };
  pc.createDataChannel('gather');
  const started = performance.now();
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await until(() => relays.length > 0 || pc.iceGatheringState === 'complete', GATHER_MS, 'gathering').catch(() => {});
    return { relays, errors, ms: Math.round(performance.now() - started), complete: pc.iceGatheringState === 'complete' };
  } finally {
    pc.close();
  }
}

/** Why no relay candidate came, from the browser's errors and the other URLs' results. */
function explain(target, gathered, earlier) {
  const { host, port, transport } = target;
  const codes = gathered.errors.map((e) => e.code);
  if (codes.includes(401)) {
    return 'wrong credential: the server answered 401 Unauthorized (wrong username or password, or an expired short-lived credential)';
  }
  if (codes.includes(403) || codes.includes(486) || codes.includes(508)) {
    const e = gathered.errors.find((x) => [403, 486, 508].includes(x.code));
    return `the server refused the allocation: ${e.code} ${e.text} (a quota or its capacity)`;
  }
  if (transport === 'udp') {
    return `no answer over UDP from ${host}:${port} within ${GATHER_MS / 1000} s: the port is blocked on the way, or no TURN server listens there`;
  }
  if (transport === 'tls') {
    const sameHost = earlier.filter((r) => r.host === host && r.verdict === 'pass');
    const tcpWorks = sameHost.some((r) => r.transport === 'tcp');
    return tcpWorks
      ? `certificate: the TLS connection to ${host}:${port} failed while TCP to the same host works: this browser does not trust the server's certificate (self-signed, an unknown authority, expired, or for another name), or port ${port} is blocked`
      : `TLS to ${host}:${port} failed: the port is closed or blocked, or this browser does not trust the server's certificate (the browser does not say which; test its TCP URL too)`;
  }
  const other = gathered.errors.find((e) => e.code !== 701);
  if (other) return `${other.code} ${other.text}`;
  return `cannot connect to ${host}:${port} over TCP: the port is closed or blocked on the way, or no server listens there`;
}

/** The selected candidate pair of `pc`: local and remote candidates. */
async function selectedPair(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
  });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    local: { type: local?.candidateType, address: `${local?.address}:${local?.port}` },
    remote: { type: remote?.candidateType, address: `${remote?.address}:${remote?.port}` },
  };
}

/** Two peer connections of this page, connected through `iceServer`'s relays. */
async function connect(iceServer) {
  const config = { iceServers: [iceServer], iceTransportPolicy: 'relay' };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate).catch(() => {});
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate).catch(() => {});
  const reliable = a.createDataChannel('reliable');
  const lossy = a.createDataChannel('lossy', { ordered: false, maxRetransmits: 0 });
  reliable.binaryType = 'arraybuffer';
  const far = {};
  b.ondatachannel = (e) => {
    e.channel.binaryType = 'arraybuffer';
    far[e.channel.label] = e.channel;
  };
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const close = () => {
    a.close();
    b.close();
  };
  try {
    await until(
      () => reliable.readyState === 'open' && lossy.readyState === 'open' && far.reliable?.readyState === 'open' && far.lossy,
      CONNECT_MS,
      'no data channel opened',
    );
  } catch (e) {
    close();
    throw e;
  }
  return { a, reliable, lossy, far, close };
}

/** The median of `values`. */
const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];

/** Round trips of small messages on the reliable channel (ms). */
async function roundTrip({ reliable, far }) {
  far.reliable.onmessage = (e) => {
    if (typeof e.data === 'string') far.reliable.send(e.data);
  };
  const times = [];
  for (let i = 0; i < PINGS; i += 1) {
    const sent = performance.now();
    const echoed = new Promise((resolve) => {
      reliable.onmessage = (e) => e.data === `ping ${i}` && resolve();
    });
    reliable.send(`ping ${i}`);
    await Promise.race([echoed, sleep(5000).then(() => Promise.reject(new TestError('a ping was not echoed within 5 s')))]);
    times.push(performance.now() - sent);
  }
  reliable.onmessage = null;
  return Math.round(median(times) * 10) / 10;
}

/** Bits a second of a bulk transfer on the reliable channel, until all arrived. */
async function throughput({ reliable, far }) {
  let received = 0;
  const arrived = new Promise((resolve) => {
    far.reliable.onmessage = (e) => {
      if (typeof e.data === 'string') return;
      received += e.data.byteLength;
      if (received >= BULK_BYTES) resolve();
    };
  });
  const chunk = new Uint8Array(CHUNK).fill(0x5a);
  reliable.bufferedAmountLowThreshold = 4 * CHUNK;
  const started = performance.now();
  for (let sent = 0; sent < BULK_BYTES; sent += CHUNK) {
    if (reliable.bufferedAmount > 16 * CHUNK) {
      await new Promise((resolve) => {
        reliable.onbufferedamountlow = resolve;
      });
    }
    reliable.send(chunk);
  }
  await Promise.race([arrived, sleep(30_000).then(() => Promise.reject(new TestError('the bulk transfer did not finish within 30 s')))]);
  const seconds = (performance.now() - started) / 1000;
  return Math.round((BULK_BYTES * 8) / seconds);
}

/** Percent of paced, unretransmitted messages that did not arrive. */
async function loss({ lossy, far }) {
  const seen = new Set();
  far.lossy.onmessage = (e) => {
    const view = new DataView(e.data);
    seen.add(view.getUint32(0));
  };
  const message = new Uint8Array(1000);
  const view = new DataView(message.buffer);
  for (let i = 0; i < LOSSY_MESSAGES; i += 1) {
    view.setUint32(0, i);
    lossy.send(message);
    await sleep(LOSSY_GAP_MS);
  }
  await sleep(1000);
  return Math.round(((LOSSY_MESSAGES - seen.size) / LOSSY_MESSAGES) * 1000) / 10;
}

/** Tests `url` with `username`/`credential`; `earlier` are the results
 * of the URLs tested before it (for the reason of a TLS failure). */
export async function testUrl(url, username, credential, earlier) {
  const target = describe(url);
  const iceServer = { urls: target.url, username, credential };
  const result = {
    url: target.url,
    transport: target.transport,
    host: target.host,
    port: target.port,
    verdict: 'fail',
    reason: null,
    relay: null,
    gatherMs: null,
    rttMs: null,
    throughputBps: null,
    lossPercent: null,
    errors: [],
  };
  const gathered = await gather(iceServer);
  result.errors = gathered.errors;
  result.gatherMs = gathered.ms;
  if (gathered.relays.length === 0) {
    result.reason = explain(target, gathered, earlier);
    return result;
  }
  result.relay = gathered.relays[0];
  let peers;
  try {
    peers = await connect(iceServer);
  } catch {
    result.reason = `a relay candidate (${result.relay}) but no data channel between two relayed peers within ${CONNECT_MS / 1000} s: the server does not relay between its own relays, or refuses them as peers`;
    return result;
  }
  try {
    const pair = await selectedPair(peers.a);
    if (pair) result.relay = pair.local.address;
    if (pair && (pair.local.type !== 'relay' || pair.remote.type !== 'relay')) {
      result.reason = `the data went over a ${pair.local.type} <-> ${pair.remote.type} pair, not through the relay`;
      return result;
    }
    result.rttMs = await roundTrip(peers);
    result.throughputBps = await throughput(peers);
    result.lossPercent = await loss(peers);
    result.verdict = 'pass';
  } catch (e) {
    result.reason = `data stopped through the relay: ${e.message}`;
  } finally {
    peers.close();
  }
  return result;
}
