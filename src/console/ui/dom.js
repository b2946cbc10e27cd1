// DOM helpers shared by the shell and the pages.

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

export function errorBox(e) {
  if (e && e.off) {
    return h('div', { class: 'notice off', role: 'alert' }, h('strong', {}, 'Service off. '), e.message,
      ' — start it with runnel serve (it is on unless --registry-addr / --connect-addr is "off").');
  }
  return h('div', { class: 'notice error', role: 'alert' }, h('strong', {}, 'Error: '), e && e.message ? e.message : String(e));
}
