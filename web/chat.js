// Chat: text messages over each peer connection's negotiated "chat" data
// channel (id 0), as JSON {t: 'chat', text, name, ts}, so the server never
// sees them. Kept in state.chat (the last MAX_CHAT), shown in the chat tab,
// and counted as unread (the badge on the panel button) while that tab is
// not in view.

import { describeError, log } from './log.js';
import { state } from './state.js';
import { notify, peerLabel, ui } from './ui.js';

const MAX_CHAT = 500;
const MAX_CHAT_LEN = 2000;

export function chatVisible() {
  return !ui.side.hidden && state.panelTab === 'chat' && !document.hidden;
}

// Sends `text` to every peer whose chat channel is open.
export function sendChat(text) {
  const clean = Array.from(text.trim()).slice(0, MAX_CHAT_LEN).join('');
  if (!clean) return;
  const ts = Date.now();
  const payload = JSON.stringify({ t: 'chat', text: clean, name: state.name || null, ts });
  let delivered = 0;
  for (const peer of state.peers.values()) {
    if (peer.chat && peer.chat.readyState === 'open') {
      try {
        peer.chat.send(payload);
        delivered += 1;
      } catch (e) {
        log('chat send failed', peer.id, describeError(e));
      }
    }
  }
  if (delivered === 0) notify('Nobody is connected to read that yet.', 'warn', 4000);
  addChat({ from: state.myId, name: state.name || 'You', text: clean, ts, mine: true, delivered });
}

// A message on `peer`'s chat channel.
export function onChatMessage(peer, data) {
  if (typeof data !== 'string' || data.length > 4 * MAX_CHAT_LEN + 200) return;
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  if (!m || m.t !== 'chat' || typeof m.text !== 'string' || !m.text) return;
  const ts = Number.isFinite(m.ts) ? m.ts : Date.now();
  addChat({ from: peer.id, name: peerLabel(peer), text: m.text.slice(0, MAX_CHAT_LEN), ts, mine: false });
}

function addChat(entry) {
  const unread = !entry.mine && !chatVisible();
  const item = { ...entry, unread };
  state.chat.push(item);
  if (state.chat.length > MAX_CHAT) state.chat.shift();
  const li = document.createElement('li');
  li.className = `chat-msg${entry.mine ? ' mine' : ''}${unread ? ' unread' : ''}`;
  li.dataset.from = entry.from || '';
  const meta = document.createElement('div');
  meta.className = 'chat-meta';
  const name = document.createElement('span');
  name.className = 'chat-name';
  name.textContent = entry.mine ? 'You' : entry.name;
  const time = document.createElement('time');
  time.dateTime = new Date(entry.ts).toISOString();
  time.textContent = new Date(entry.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  meta.append(name, time);
  const text = document.createElement('div');
  text.className = 'chat-text';
  text.textContent = entry.text;
  li.append(meta, text);
  ui.chatLog.append(li);
  while (ui.chatLog.children.length > MAX_CHAT) ui.chatLog.firstElementChild.remove();
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  if (unread) {
    state.unread += 1;
    renderUnread();
    if (ui.side.hidden) notify(`${entry.name}: ${entry.text.slice(0, 80)}`, 'info', 4000);
  }
}

export function markChatRead() {
  if (state.unread === 0) return;
  state.unread = 0;
  for (const item of state.chat) item.unread = false;
  renderUnread();
  // The marks stay a moment, so one sees which messages are new.
  const marked = Array.from(ui.chatLog.querySelectorAll('.chat-msg.unread'));
  setTimeout(() => marked.forEach((li) => li.classList.remove('unread')), 2000);
}

function renderUnread() {
  ui.unread.hidden = state.unread === 0;
  ui.unread.textContent = String(state.unread);
  ui.panel.title = state.unread ? `${state.unread} unread message${state.unread === 1 ? '' : 's'}` : 'Chat, files, stats and devices';
}

// Forgets the conversation (the call ended).
export function clearChat() {
  state.chat = [];
  ui.chatLog.textContent = '';
  state.unread = 0;
  renderUnread();
}
