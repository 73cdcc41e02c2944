// The page's state: one object, shared by the modules and exposed as
// window.turnpikeDemo (demo.js), which the browser tests and the console
// read. demo.js adds to it, read-only, the signaling client's socket and
// counters (ws, resume, rx, acked, tx, txLog, counting, reconnecting,
// resumes) and the restartIce(id) hook.

import { events } from './log.js';

export const state = {
  phase: 'idle', // idle | media | connecting | joined
  myId: null,
  room: null,
  name: '',
  relayOnly: false,
  // From joined, then from each ice-servers push.
  iceServers: [],
  localStream: null,
  // id -> peer (call.js: {pc, name, chat, files, remote, selected, stats, ...}).
  peers: new Map(),
  // Recent log lines, newest last, for debugging from the console or a test.
  events,
  // Bumped on every join and teardown, so callbacks of an old call stop.
  session: 0,
  // Times (ms since the epoch) and usernames of pushed iceServers.
  iceRefreshes: [],
  chat: [],
  unread: 0,
  // `${dir}:${peerId}:${id}` -> transfer (files.js).
  transfers: new Map(),
  screen: null, // {stream, track} while sharing
  panelTab: 'chat',
};
