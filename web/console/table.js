// The table of live allocations (`GET /v1/allocations`): user, source,
// transport, relay, age, rate and bytes, sortable by any column and
// filtered by user, with the admin API's actions on each row. A row's
// rate is its bytes' growth (both ways, in bits) between two polls; a row
// seen once has none yet.

import { age, bytes, si } from './format.js';

const SORTERS = {
  user: (a) => a.user,
  client: (a) => a.client,
  transport: (a) => a.transport,
  relay: (a) => a.relays.join(' '),
  age: (a) => a.age_s,
  rate: (a) => a.rate ?? -1,
  bytes: (a) => a.to_peer.bytes + a.to_client.bytes,
};

export class AllocationTable {
  /** `onAction(action, allocation)` runs the row's buttons (`end`, `end-user`, `revoke`). */
  constructor(elements, onAction) {
    Object.assign(this, elements);
    this.onAction = onAction;
    this.rows = [];
    this.seen = new Map();
    this.sort = { key: 'age', descending: false };
    for (const button of this.head.querySelectorAll('button[data-sort]')) {
      button.addEventListener('click', () => this.sortBy(button.dataset.sort));
    }
    this.filter.addEventListener('input', () => this.render());
    this.body.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      const row = button?.closest('tr');
      const allocation = this.rows.find((a) => a.id === row?.dataset.id);
      if (allocation) this.onAction(button.dataset.action, allocation);
    });
  }

  /** Shows `list`, read at `nowMs`. */
  update(list, nowMs) {
    const seen = new Map();
    for (const allocation of list) {
      const total = allocation.to_peer.bytes + allocation.to_client.bytes;
      const before = this.seen.get(allocation.id);
      const seconds = before ? (nowMs - before.at) / 1000 : 0;
      allocation.rate = seconds > 0 ? (Math.max(0, total - before.total) * 8) / seconds : null;
      seen.set(allocation.id, { total, at: nowMs });
    }
    this.seen = seen;
    this.rows = list;
    this.render();
  }

  sortBy(key) {
    this.sort = { key, descending: this.sort.key === key ? !this.sort.descending : key === 'rate' || key === 'bytes' };
    this.render();
  }

  render() {
    const wanted = this.filter.value.trim().toLowerCase();
    const shown = this.rows.filter((a) => !wanted || a.user.toLowerCase().includes(wanted));
    const key = SORTERS[this.sort.key];
    const direction = this.sort.descending ? -1 : 1;
    shown.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      if (x < y) return -direction;
      if (x > y) return direction;
      return a.id < b.id ? -1 : 1;
    });
    this.body.replaceChildren(...shown.map((a) => this.row(a)));
    for (const th of this.head.querySelectorAll('th')) {
      const sort = th.querySelector('button[data-sort]')?.dataset.sort;
      if (sort === this.sort.key) th.setAttribute('aria-sort', this.sort.descending ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    this.count.textContent = String(this.rows.length);
    this.empty.hidden = shown.length > 0;
  }

  row(a) {
    const tr = document.createElement('tr');
    tr.dataset.id = a.id;
    tr.dataset.user = a.user;
    tr.dataset.rate = a.rate === null ? '' : String(a.rate);
    const transport = a.relay_protocol === 'tcp' ? `${a.transport} → tcp relay` : a.transport;
    const cells = [
      [a.user, 'user'],
      [a.client, 'mono'],
      [transport, ''],
      [a.relays.join(', '), 'mono'],
      [age(a.age_s), 'num'],
      [a.rate === null ? '–' : si(a.rate, 'bit/s'), 'num rate'],
      [`${bytes(a.to_peer.bytes)} / ${bytes(a.to_client.bytes)}`, 'num'],
    ];
    for (const [text, className] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      td.className = className;
      tr.append(td);
    }
    const cell = document.createElement('td');
    const actions = document.createElement('div');
    actions.className = 'actions';
    cell.append(actions);
    for (const [action, text, title] of [
      ['end', 'End', 'End this allocation'],
      ['end-user', 'End user’s', `End every allocation of ${a.user}`],
      ['revoke', 'Revoke', `Refuse ${a.user} from now on and end its allocations`],
    ]) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = `btn btn-small ${action === 'end' ? 'btn-ghost' : 'btn-ghost btn-risky'}`;
      button.dataset.action = action;
      button.textContent = text;
      button.title = title;
      actions.append(button);
    }
    tr.append(cell);
    return tr;
  }
}
