// The console's shell: hash routing (#/topics/orders?tab=messages), the
// page life cycle (timers stopped on navigation) and shared DOM helpers.

import { pages } from './pages.js';

// h('div', {class: 'x', onclick: f}, 'text', child...): DOM without HTML
// strings, so nothing read from the cluster is ever parsed as markup.
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

let cleanups = [];

// What a page gets: where to draw, the route's parameters, timers that
// end with the page.
function context(params, query) {
  return {
    params,
    query,
    every(ms, fn) {
      const id = setInterval(fn, ms);
      cleanups.push(() => clearInterval(id));
    },
    onLeave(fn) { cleanups.push(fn); },
  };
}

const routes = [
  [/^\/?$/, 'overview', []],
  [/^\/topics$/, 'topics', []],
  [/^\/topics\/([^/]+)$/, 'topic', ['name']],
  [/^\/groups$/, 'groups', []],
  [/^\/groups\/([^/]+)$/, 'group', ['id']],
  [/^\/schemas$/, 'schemas', []],
  [/^\/schemas\/([^/]+)$/, 'subject', ['subject']],
  [/^\/connectors$/, 'connectors', []],
  [/^\/connectors\/([^/]+)$/, 'connector', ['name']],
  [/^\/transforms$/, 'transforms', []],
];

const section = {
  overview: 'overview', topics: 'topics', topic: 'topics', groups: 'groups', group: 'groups',
  schemas: 'schemas', subject: 'schemas', connectors: 'connectors', connector: 'connectors',
  transforms: 'transforms',
};

async function route() {
  for (const c of cleanups) c();
  cleanups = [];
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search] = hash.split('?');
  const query = new URLSearchParams(search || '');
  const main = document.getElementById('main');
  let found = null;
  for (const [re, page, names] of routes) {
    const m = path.match(re);
    if (m) {
      const params = {};
      names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      found = { page, params };
      break;
    }
  }
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', found && a.dataset.page === section[found.page]);
  }
  main.replaceChildren();
  if (!found) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, hash), '.'));
    return;
  }
  try {
    await pages[found.page](main, context(found.params, query));
  } catch (e) {
    main.append(errorBox(e));
  }
}

export function errorBox(e) {
  if (e && e.off) {
    return h('div', { class: 'notice off', role: 'alert' }, h('strong', {}, 'Service off. '), e.message,
      ' — start it with runnel serve (it is on unless --registry-addr / --connect-addr is "off").');
  }
  return h('div', { class: 'notice error', role: 'alert' }, h('strong', {}, 'Error: '), e && e.message ? e.message : String(e));
}

window.addEventListener('hashchange', route);
// Module scripts run once the document is parsed.
route();
