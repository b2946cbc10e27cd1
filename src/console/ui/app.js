// The console's shell: hash routing (#/topics/orders?tab=messages), the
// page life cycle (timers stopped on navigation).

import { h, errorBox } from './dom.js';
import { pages } from './pages.js';

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

window.addEventListener('hashchange', route);
// Module scripts run once the document is parsed.
route();
