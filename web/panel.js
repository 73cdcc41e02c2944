// The side panel and its tabs: chat, files, stats and devices. Opening a
// tab brings it up to date (chat read, stats drawn, devices listed).

import { markChatRead } from './chat.js';
import { describeError, log } from './log.js';
import { refreshDevices } from './media.js';
import { state } from './state.js';
import { renderStatsPanel } from './stats.js';
import { $, ui } from './ui.js';

const TABS = ['chat', 'files', 'stats', 'devices'];

export function openPanel(tab) {
  state.panelTab = tab;
  ui.side.hidden = false;
  ui.panel.setAttribute('aria-expanded', 'true');
  for (const button of ui.side.querySelectorAll('.side-tab')) {
    button.setAttribute('aria-selected', String(button.dataset.tab === tab));
  }
  for (const name of TABS) $(`tab-${name}`).hidden = name !== tab;
  if (tab === 'chat') {
    markChatRead();
    ui.chatInput.focus();
  } else if (tab === 'stats') {
    renderStatsPanel();
  } else if (tab === 'devices') {
    refreshDevices().catch((e) => log('devices failed', describeError(e)));
  }
}

export function closePanel() {
  ui.side.hidden = true;
  ui.panel.setAttribute('aria-expanded', 'false');
}
