// Pocket's dashboard: polls the controller's API every two seconds with the cluster token and redraws.
// Nothing here is loaded from anywhere but this controller (uPlot is embedded at build time).
(function () {
  'use strict';
  const POLL_MS = 2000;
  const WINDOW_S = 600;
  const TIERS = ['dram', 'ssd', 'hdd'];
  const COLORS = { dram: '#4fb3ff', ssd: '#b58cff', hdd: '#ffb454' };
  const $ = (id) => document.getElementById(id);
  let token = null;
  let prices = null;
  let timer = null;
  const charts = {};

  function readToken() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem('pocket-token', decodeURIComponent(match[1]));
      // The token leaves the address bar (and the history) once read.
      history.replaceState(null, '', location.pathname + location.search);
    }
    return sessionStorage.getItem('pocket-token');
  }

  class Unauthorized extends Error {}

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized('the controller refused this token');
    if (!response.ok) throw new Error(path + ': HTTP ' + response.status);
    return response.json();
  }

  function showLogin(message) {
    clearTimeout(timer);
    token = null;
    sessionStorage.removeItem('pocket-token');
    $('dashboard').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('live').className = 'dot off';
    $('updated').textContent = 'signed out';
    $('token').focus();
  }

  function showDashboard() {
    $('login').hidden = true;
    $('dashboard').hidden = false;
    $('logout').hidden = false;
  }

  // ---- formatting
  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + units[i];
  }
  const rate = (n) => bytes(n) + '/s';
  const pct = (x) => (100 * x).toFixed(x < 0.1 ? 1 : 0) + ' %';
  const num = (n) => n.toLocaleString('en-US');
  const objects = (n) => num(n) + (n === 1 ? ' object' : ' objects');
  const money = (d) => '$' + (d < 0.01 && d > 0 ? d.toFixed(6) : d.toFixed(d < 100 ? 4 : 2));
  const gbs = (x) => x < 10 ? x.toFixed(3) : x.toFixed(1);
  const clock = (t) => new Date(t).toLocaleTimeString('en-GB', { hour12: false });
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v; else if (k === 'style') node.style.cssText = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }
  const tierBadge = (tier) => el('span', { class: 'tier ' + tier }, tier);

  // ---- cost at the node-class prices
  function jobCost(usage) {
    if (!usage || !prices) return 0;
    let cost = 0;
    const byTier = usage.gbSecondsByTier || {};
    let blocks = 0;
    for (const [tier, value] of Object.entries(byTier)) { cost += value * (prices[tier] || 0); blocks += value; }
    // Inline bytes live on the metadata server: priced as dram.
    cost += Math.max(0, (usage.gbSeconds || 0) - blocks) * (prices.dram || 0);
    return cost;
  }

  // ---- charts
  function chart(id, unit, format, tiers, data) {
    const key = id + ':' + tiers.join(',');
    const target = $(id);
    const width = Math.max(280, target.clientWidth);
    if (!charts[id] || charts[id].key !== key) {
      if (charts[id]) charts[id].plot.destroy();
      const opts = {
        width, height: 190,
        cursor: { drag: { x: false, y: false } },
        legend: { show: true },
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, unit === '%' ? 1 : 1024)] } },
        axes: [
          { stroke: '#8796a8', grid: { stroke: '#1f2a36' }, ticks: { stroke: '#1f2a36' } },
          { stroke: '#8796a8', grid: { stroke: '#1f2a36' }, ticks: { stroke: '#1f2a36' }, size: 70, values: (u, v) => v.map(format) },
        ],
        series: [{}].concat(tiers.map((t) => ({ label: t, stroke: COLORS[t], width: 2, fill: COLORS[t] + '22', value: (u, v) => v == null ? '-' : format(v) }))),
      };
      target.textContent = '';
      charts[id] = { key, plot: new uPlot(opts, data, target) };
    } else {
      charts[id].plot.setData(data);
      if (charts[id].plot.width !== width) charts[id].plot.setSize({ width, height: 190 });
    }
  }

  function drawCharts(history) {
    const times = new Set();
    for (const node of history.nodes) for (const s of node.samples) times.add(Date.parse(s.time));
    const xs = [...times].sort((a, b) => a - b).filter((t) => t >= Date.now() - WINDOW_S * 1000 - 60000);
    const index = new Map(xs.map((t, i) => [t, i]));
    const tiers = TIERS.filter((t) => history.nodes.some((n) => n.tier === t));
    const zero = () => xs.map(() => 0);
    const acc = {};
    for (const t of tiers) acc[t] = { cap: zero(), used: zero(), cpu: zero(), live: zero(), net: zero() };
    for (const node of history.nodes) {
      const a = acc[node.tier];
      if (!a) continue;
      for (const s of node.samples) {
        const i = index.get(Date.parse(s.time));
        const state = String(s.state).toLowerCase();
        if (i === undefined || (state !== 'live' && state !== 'draining')) continue;
        a.cap[i] += s.capacity; a.used[i] += s.used;
        a.cpu[i] += s.cpu; a.live[i] += 1;
        a.net[i] += s.rxBytesPerSecond + s.txBytesPerSecond;
      }
    }
    const x = xs.map((t) => t / 1000);
    const cap = [x], cpu = [x], net = [x];
    for (const t of tiers) {
      const a = acc[t];
      cap.push(a.cap.map((c, i) => c > 0 ? a.used[i] / c : null));
      cpu.push(a.live.map((n, i) => n > 0 ? a.cpu[i] / n : null));
      net.push(a.net.map((v, i) => a.live[i] > 0 ? v : null));
    }
    chart('chart-capacity', '%', (v) => pct(v), tiers, cap);
    chart('chart-cpu', '%', (v) => pct(v), tiers, cpu);
    chart('chart-network', 'B/s', (v) => rate(v), tiers, net);
  }

  // ---- totals, tables, timeline
  function drawTotals(cluster) {
    const serving = cluster.nodes.filter((n) => n.state === 'live' || n.state === 'draining');
    const capacity = serving.reduce((s, n) => s + n.capacity.total, 0);
    const used = serving.reduce((s, n) => s + n.capacity.used, 0);
    const rx = serving.reduce((s, n) => s + n.network.rxBytesPerSecond, 0);
    const tx = serving.reduce((s, n) => s + n.network.txBytesPerSecond, 0);
    const gbSeconds = cluster.jobs.reduce((s, j) => s + ((j.usage && j.usage.gbSeconds) || 0), 0);
    const cost = cluster.jobs.reduce((s, j) => s + jobCost(j.usage), 0);
    const byTier = TIERS.map((t) => [t, cluster.nodes.filter((n) => n.tier === t && n.state === 'live').length]).filter(([, c]) => c > 0);
    const cards = [
      ['Nodes', num(cluster.nodes.filter((n) => n.state === 'live').length), byTier.map(([t, c]) => c + ' ' + t).join(' · ') || 'none live'],
      ['Jobs', num(cluster.jobs.length), objects(cluster.jobs.reduce((s, j) => s + ((j.usage && j.usage.objects) || 0), 0))],
      ['Capacity used', capacity > 0 ? pct(used / capacity) : '-', bytes(used) + ' of ' + bytes(capacity)],
      ['Network', rate(rx + tx), 'rx ' + rate(rx) + ' · tx ' + rate(tx)],
      ['GB-seconds', gbs(gbSeconds), 'of the jobs registered now'],
      ['Cost', money(cost), 'at the node-class prices'],
    ];
    $('totals').replaceChildren(...cards.map(([label, value, detail]) =>
      el('div', { class: 'total' }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'detail' }, detail))));
  }

  function drawNodes(nodes) {
    const rows = nodes.slice().sort((a, b) => a.id - b.id).map((n) => {
      const share = n.capacity.total > 0 ? n.capacity.used / n.capacity.total : 0;
      return el('tr', { 'data-node': n.id },
        el('td', {}, '#' + n.id), el('td', {}, tierBadge(n.tier)), el('td', {}, el('span', { class: 'state ' + n.state }, n.state)),
        el('td', {}, n.address),
        el('td', {}, el('div', { class: 'bar' }, el('span', { style: 'width:' + (100 * share).toFixed(1) + '%' }), el('em', {}, bytes(n.capacity.used) + ' / ' + bytes(n.capacity.total)))),
        el('td', {}, pct(n.cpu)), el('td', {}, rate(n.network.rxBytesPerSecond)), el('td', {}, rate(n.network.txBytesPerSecond)));
    });
    $('nodes').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'empty', colspan: 8 }, 'no storage nodes yet: the controller starts them as jobs register'))]));
  }

  function drawJobs(jobs) {
    const rows = jobs.slice().sort((a, b) => a.registeredAt < b.registeredAt ? -1 : 1).map((j) => {
      const u = j.usage || {};
      return el('tr', { 'data-job': j.jobId },
        el('td', {}, j.name === j.jobId ? j.jobId : j.name + ' (' + j.jobId + ')'), el('td', {}, tierBadge(j.tier)), el('td', {}, num(j.nodes.length)),
        el('td', {}, num(u.objects || 0)), el('td', {}, bytes((u.blockBytes || 0) + (u.inlineBytes || 0))),
        el('td', {}, bytes(j.capacityBytes)), el('td', {}, num(u.requests || 0)), el('td', {}, gbs(u.gbSeconds || 0)), el('td', {}, money(jobCost(u))));
    });
    $('jobs').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'empty', colspan: 9 }, 'no jobs: register one with `pocket job register NAME` or POST /v1/jobs'))]));
  }

  function kindClass(kind) {
    if (kind === 'scale-up' || kind === 'node-started' || kind === 'pool-claimed') return 'kind-up';
    if (kind === 'scale-down' || kind === 'node-drained' || kind === 'node-stopped' || kind === 'node-removed') return 'kind-down';
    if (kind === 'node-dead' || kind.endsWith('failed') || kind === 'pool-lost') return 'kind-bad';
    if (kind.startsWith('pool')) return 'kind-pool';
    return 'kind-other';
  }

  function drawEvents(events) {
    const now = Date.now();
    const from = now - WINDOW_S * 1000;
    const marks = [];
    for (let m = 0; m <= 10; m += 2) {
      marks.push(el('span', { class: 'tick', style: 'left:' + (100 - m * 10) + '%' }, m === 0 ? 'now' : '-' + m + ' min'));
    }
    for (const e of events) {
      const t = Date.parse(e.time);
      if (t < from) continue;
      marks.push(el('span', { class: 'mark ' + kindClass(e.kind), style: 'left:' + (100 * (t - from) / (now - from)).toFixed(2) + '%', title: clock(t) + ' ' + e.kind + ': ' + e.reason }));
    }
    $('timeline').replaceChildren(...marks);
    const items = events.slice(-40).reverse().map((e) => el('li', { 'data-kind': e.kind },
      el('span', { class: 'time' }, clock(Date.parse(e.time))), el('span', { class: 'kind ' }, el('span', { class: 'dot ' + kindClass(e.kind), style: 'margin-right:6px' }), e.kind),
      el('span', {}, e.node == null ? '' : '#' + e.node), el('span', {}, e.reason)));
    $('events').replaceChildren(...(items.length ? items : [el('li', {}, el('span', { class: 'time' }, ''), el('span', {}, 'no events yet'))]));
  }

  // ---- the loop
  async function refresh() {
    try {
      if (!prices) {
        prices = {};
        for (const c of await api('/v1/node-classes')) prices[c.tier] = c.costPerGbSecond;
      }
      const [cluster, history, events] = await Promise.all([api('/v1/cluster'), api('/v1/cluster/history?samples=' + WINDOW_S), api('/v1/events?limit=200')]);
      showDashboard();
      drawTotals(cluster);
      drawNodes(cluster.nodes);
      drawJobs(cluster.jobs);
      drawEvents(events);
      drawCharts(history);
      $('live').className = 'dot on';
      $('updated').textContent = 'live · ' + clock(Date.now());
    } catch (error) {
      if (error instanceof Unauthorized) { prices = null; showLogin('That token was refused: ' + error.message + '.'); return; }
      $('live').className = 'dot off';
      $('updated').textContent = 'controller unreachable (' + error.message + '), retrying';
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token').value.trim();
    if (!/^[0-9a-fA-F]{32}$/.test(value)) { $('login-error').textContent = 'A cluster token is 32 hex digits.'; return; }
    sessionStorage.setItem('pocket-token', value);
    token = value;
    $('token').value = '';
    $('login-error').textContent = '';
    refresh();
  });
  $('logout').addEventListener('click', () => showLogin(''));

  token = readToken();
  if (token) refresh(); else showLogin('');
})();
