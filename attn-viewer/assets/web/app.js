// attnviz viewer. It draws what attn-viz-core computed: every position, color, line, label and weight
// comes from the API (served by `attnviz serve`, or embedded by `attnviz export-html`). This script
// only lays the views out, draws them (WebGL for points) and keeps the state in the URL.
'use strict';

const $ = (id) => document.getElementById(id);
const EMBED = (() => {
  const el = document.getElementById('attnviz-embed');
  return el ? JSON.parse(el.textContent) : null;
})();
const OFFLINE_HINT = 'This exported page holds precomputed views only; search, point selection, labels and other sequences need `attnviz serve <dataset>`.';

// ---------------------------------------------------------------- state (kept in the URL hash)
const DEFAULTS = {
  view: 'matrix', proj: '', enc: 'query_key', q: '', exact: false, head: 'L0H0', sel: '',
  labels: false, size: false, seq: '', hide: true, hidden: '', agg: false, focus: '', imode: 'heatmap',
  fid: false,
};
const state = { ...DEFAULTS };

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(DEFAULTS)) {
    if (!p.has(k)) { state[k] = DEFAULTS[k]; continue; }
    const v = p.get(k);
    state[k] = typeof DEFAULTS[k] === 'boolean' ? v === '1' : v;
  }
}

function writeHash() {
  const p = new URLSearchParams();
  for (const k of Object.keys(DEFAULTS)) {
    if (state[k] === DEFAULTS[k]) continue;
    p.set(k, typeof state[k] === 'boolean' ? (state[k] ? '1' : '0') : state[k]);
  }
  const h = '#' + p.toString();
  if (location.hash === h) return;
  try {
    history.replaceState(null, '', h === '#' ? location.pathname + location.search : h);
  } catch (e) {
    // A page without a URL of its own (a notebook's <iframe srcdoc>: about:srcdoc) cannot keep the
    // view in its address; the view itself works the same.
  }
}

// ---------------------------------------------------------------- API
// The canonical request key: names sorted, empty values dropped, values escaped like the exporter.
function requestKey(endpoint, params) {
  const parts = Object.keys(params).sort()
    .filter((k) => params[k] !== undefined && params[k] !== null && params[k] !== '' && params[k] !== false)
    .map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(params[k] === true ? '1' : String(params[k]))}`);
  return `${endpoint}?${parts.join('&')}`;
}

class OfflineMissing extends Error {}

const decodeBase64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
// An exported frame is its parts (header, then each buffer) concatenated; a part shared by several
// frames (the positions of every color encoding's Matrix View) is embedded once.
const decodedParts = new Map();
function joinParts(ids) {
  const chunks = ids.map((i) => {
    if (!decodedParts.has(i)) decodedParts.set(i, decodeBase64(EMBED.parts[i]));
    return decodedParts.get(i);
  });
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

async function api(endpoint, params = {}) {
  const key = requestKey(endpoint, params);
  if (EMBED) {
    const r = EMBED.responses[key];
    if (!r) throw new OfflineMissing(OFFLINE_HINT);
    if (r.json !== undefined) return r.json;
    const bin = r.parts ? joinParts(r.parts) : decodeBase64(r.base64);
    return r.type === 'application/octet-stream' ? parseFrame(bin.buffer) : new Blob([bin], { type: r.type });
  }
  const res = await fetch('/api/' + key);
  const type = res.headers.get('Content-Type') || '';
  if (type.startsWith('application/json')) {
    const body = await res.json();
    if (!res.ok || body.error) throw new Error(body.error || `${res.status} ${res.statusText}`);
    return body;
  }
  if (!res.ok) throw new Error(`${endpoint}: ${res.status} ${res.statusText}`);
  if (type.startsWith('application/octet-stream')) return parseFrame(await res.arrayBuffer());
  return res.blob();
}

// A binary frame of the API: 'AVF1', u32 header length, JSON header, 4-byte aligned buffers.
// Positions come as u16 fixed point: 0..65535 spans the view's [0, 1].
const BUFFER_TYPES = { positions: Uint16Array, sizes: Float32Array, tokens: Uint32Array, colors: Uint8Array, flags: Uint8Array };
const POSITION_SCALE = 1 / 65535;
// Point `i` of a frame's positions as [x, y, z] in [0, 1].
const pointAt = (positions, i) => [positions[3 * i] * POSITION_SCALE, positions[3 * i + 1] * POSITION_SCALE, positions[3 * i + 2] * POSITION_SCALE];
function parseFrame(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (magic !== 'AVF1') throw new Error('unexpected answer from the server (not an attnviz frame)');
  const len = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
  const base = 8 + Math.ceil(len / 4) * 4;
  const arrays = {};
  for (const [name, [offset, size]] of Object.entries(header.buffers)) {
    const T = BUFFER_TYPES[name] || Uint8Array;
    arrays[name] = new T(buffer, base + offset, size / T.BYTES_PER_ELEMENT);
  }
  return { header, arrays };
}

// ---------------------------------------------------------------- small helpers
function notice(message, isError = false) {
  const n = $('notice');
  n.hidden = !message;
  n.textContent = message || '';
  n.classList.toggle('error', isError);
}

function report(err) {
  console.error(err);
  notice(err instanceof OfflineMissing ? err.message : `Error: ${err.message}`, !(err instanceof OfflineMissing));
}

const headName = (h) => `L${h.layer}H${h.head}`;
function parseHead(s) {
  const m = /^L(\d+)H(\d+)$/i.exec(s || '');
  return m ? { layer: +m[1], head: +m[2] } : null;
}
const rgba = (c, a) => `rgba(${c[0]},${c[1]},${c[2]},${a === undefined ? c[3] / 255 : a})`;
const fmt = (v, d = 3) => (v === null || v === undefined ? 'n/a' : Number(v).toFixed(d));
function el(tag, attrs = {}, text) {
  const isSvg = ['svg', 'line', 'text', 'circle', 'rect', 'g', 'path'].includes(tag);
  const e = isSvg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showTooltip(ev, text) {
  const t = $('tooltip');
  t.hidden = false;
  t.textContent = text;
  t.style.left = `${ev.clientX + 14}px`;
  t.style.top = `${ev.clientY + 14}px`;
}
const hideTooltip = () => { $('tooltip').hidden = true; };

function drawLegend(container, legend) {
  container.replaceChildren();
  if (!legend) return;
  container.append(el('b', {}, legend.title));
  for (const e of legend.entries) {
    const s = el('span', { class: 'entry' });
    const sw = el('span', { class: 'swatch' });
    sw.style.background = rgba(e.color);
    s.append(sw, el('span', {}, e.label));
    container.append(s);
  }
  for (const g of legend.gradients) {
    const s = el('span', { class: 'entry' });
    const r = el('span', { class: 'ramp' });
    r.style.background = `linear-gradient(to right, ${rgba(g.from)}, ${rgba(g.to)})`;
    s.append(el('span', {}, g.label), r, el('span', { class: 'muted' }, `${fmt(g.min)} .. ${fmt(g.max)}`));
    container.append(s);
  }
}

function cellInfoText(head, info) {
  const lines = [headName(head)];
  if (info.signature) {
    const s = info.signature;
    lines.push(`pattern: ${s.label.replace(/_/g, ' ')}`,
      `first token ${fmt(s.first_token, 2)}, special ${fmt(s.special, 2)}, self ${fmt(s.self_share, 2)}, previous ${fmt(s.previous_share, 2)}, next ${fmt(s.next_share, 2)}`,
      `mean distance ${fmt(s.mean_distance, 1)}, entropy ${fmt(s.entropy, 2)}`);
  }
  const t = info.trust;
  lines.push(`trust: ${t.level} (distance/dot-product correlation ${fmt(t.distance_correlation)}, trustworthiness ${fmt(t.trustworthiness)}, continuity ${fmt(t.continuity)})`);
  const f = info.fidelity;
  if (f) {
    lines.push(`attention fidelity ${fmt(f.fidelity)} (closeness vs attention, per query), hit@3 ${fmt(f.hit_at_3)} (chance ${fmt(f.chance_at_3)}), global ${fmt(f.global_fidelity)}`);
  }
  const c = info.ceiling;
  if (c) {
    const share = f && f.hit_at_3 !== null && c.hit_at_3 ? ` (this layout shows ${fmt(f.hit_at_3 / c.hit_at_3, 2)} of it)` : '';
    lines.push(`ceiling: a layout made to show this head's attention alone reaches hit@3 ${fmt(c.hit_at_3)}, fidelity ${fmt(c.fidelity)}${share}`);
  }
  if (info.objective !== null && info.objective !== undefined) lines.push(`fit objective ${fmt(info.objective, 4)}`);
  return lines.join('\n');
}

// Cell tint by attention fidelity: red (nearness says nothing about attention, <= 0) to green (1).
function fidelityTint(info) {
  const f = info.fidelity && info.fidelity.fidelity;
  if (f === null || f === undefined) return 'rgba(128, 128, 128, 0.15)';
  const t = Math.max(0, Math.min(1, f));
  return `rgba(${Math.round(220 * (1 - t))}, ${Math.round(180 * t)}, 60, 0.28)`;
}

// Sizes a canvas to `width` x `height` CSS px at the screen's pixel density; returns that density.
function sizeCanvas(canvas, width, height) {
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  return dpr;
}

// ---------------------------------------------------------------- WebGL point renderer
const VERT = `
attribute vec3 a_pos; attribute vec4 a_color; attribute float a_flag; attribute float a_size;
uniform mat3 u_rot; uniform float u_zoom; uniform vec2 u_pan; uniform float u_point; uniform float u_fade;
varying vec4 v_color;
void main() {
  vec3 p = u_rot * (a_pos - vec3(0.5));
  float hit = mod(a_flag, 2.0);
  float emph = mod(floor(a_flag / 2.0), 2.0);
  float sel = floor(a_flag / 4.0);
  vec2 xy = (p.xy * u_zoom + u_pan) * 1.9;
  float z = clamp(-p.z * 0.5, -0.45, 0.45);
  if (hit + emph + sel > 0.5) z -= 0.5;
  gl_Position = vec4(xy, z, 1.0);
  gl_PointSize = u_point * a_size * (sel > 0.5 ? 3.5 : (hit > 0.5 ? 2.0 : 1.0));
  vec4 c = a_color / 255.0;
  if (u_fade > 0.5 && hit + emph + sel < 0.5) c.rgb = mix(c.rgb, vec3(1.0), 0.7);
  if (hit > 0.5 && emph < 0.5) c.rgb *= 0.85;
  if (sel > 0.5) c = vec4(0.05, 0.05, 0.05, 1.0);
  v_color = c;
}`;
const FRAG = `
precision mediump float;
varying vec4 v_color;
void main() {
  vec2 d = gl_PointCoord - vec2(0.5);
  if (dot(d, d) > 0.25) discard;
  gl_FragColor = v_color;
}`;

class PointRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    const gl = canvas.getContext('webgl', { preserveDrawingBuffer: true, antialias: true, alpha: false });
    if (!gl) throw new Error('this browser has no WebGL; the viewer needs it');
    this.gl = gl;
    const sh = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const prog = gl.createProgram();
    gl.attachShader(prog, sh(gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    this.prog = prog;
    this.loc = {};
    for (const a of ['a_pos', 'a_color', 'a_flag', 'a_size']) this.loc[a] = gl.getAttribLocation(prog, a);
    for (const u of ['u_rot', 'u_zoom', 'u_pan', 'u_point', 'u_fade']) this.loc[u] = gl.getUniformLocation(prog, u);
    this.buffers = {};
    this.count = 0;
  }

  // positions: Uint16Array (3 per point, fixed point), colors: Uint8Array (4), flags: Uint8Array,
  // sizes: Float32Array or null.
  upload(positions, colors, flags, sizes) {
    const gl = this.gl;
    this.count = positions.length / 3;
    const put = (name, data) => {
      if (!this.buffers[name]) this.buffers[name] = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[name]);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    };
    put('pos', positions);
    put('color', colors);
    put('flag', new Float32Array(flags));
    put('size', sizes || new Float32Array(this.count).fill(1));
  }

  setFlags(flags) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.flag);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(flags), gl.STATIC_DRAW);
  }

  resize(width, height) {
    this.dpr = sizeCanvas(this.canvas, width, height);
  }

  // regions: [{x, y, w, h (CSS px, top-left origin), offset, count}]
  draw(regions, { rot, zoom = 1, pan = [0, 0], point = 2, fade = false }) {
    const gl = this.gl;
    const dpr = this.dpr || 1;
    gl.disable(gl.SCISSOR_TEST);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.depthFunc(gl.LEQUAL);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
    gl.useProgram(this.prog);
    const attr = (name, buf, size, type, normalized) => {
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[buf]);
      gl.enableVertexAttribArray(this.loc[name]);
      gl.vertexAttribPointer(this.loc[name], size, type, normalized, 0, 0);
    };
    attr('a_pos', 'pos', 3, gl.UNSIGNED_SHORT, true);
    attr('a_color', 'color', 4, gl.UNSIGNED_BYTE, false);
    attr('a_flag', 'flag', 1, gl.FLOAT, false);
    attr('a_size', 'size', 1, gl.FLOAT, false);
    gl.uniformMatrix3fv(this.loc.u_rot, false, rot);
    gl.uniform1f(this.loc.u_zoom, zoom);
    gl.uniform2f(this.loc.u_pan, pan[0], pan[1]);
    gl.uniform1f(this.loc.u_point, point * dpr);
    gl.uniform1f(this.loc.u_fade, fade ? 1 : 0);
    gl.enable(gl.SCISSOR_TEST);
    const H = this.canvas.height;
    for (const r of regions) {
      const x = Math.round(r.x * dpr);
      const w = Math.round(r.w * dpr);
      const h = Math.round(r.h * dpr);
      const y = H - Math.round(r.y * dpr) - h;
      gl.viewport(x, y, w, h);
      gl.scissor(x, y, w, h);
      if (r.count > 0) gl.drawArrays(gl.POINTS, r.offset, r.count);
    }
  }

  // Non-white pixels inside each region (what the browser test checks).
  inkPerRegion(regions) {
    const gl = this.gl;
    const dpr = this.dpr || 1;
    const H = this.canvas.height;
    return regions.map((r) => {
      const x = Math.round(r.x * dpr);
      const w = Math.round(r.w * dpr);
      const h = Math.round(r.h * dpr);
      const y = H - Math.round(r.y * dpr) - h;
      const px = new Uint8Array(w * h * 4);
      gl.readPixels(x, y, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
      let ink = 0;
      for (let i = 0; i < px.length; i += 4) if (px[i] < 245 || px[i + 1] < 245 || px[i + 2] < 245) ink++;
      return ink;
    });
  }
}

// The same drawing without WebGL (browsers or remote desktops that lack it): points are written
// into one RGBA pixel buffer on the CPU, with the shader's colors, sizes and depth order.
class CanvasPointRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.count = 0;
  }

  upload(positions, colors, flags, sizes) {
    this.positions = positions;
    this.colors = colors;
    this.flags = Uint8Array.from(flags);
    this.sizes = sizes;
    this.count = positions.length / 3;
  }

  setFlags(flags) { this.flags = Uint8Array.from(flags); }

  resize(width, height) {
    this.dpr = sizeCanvas(this.canvas, width, height);
  }

  draw(regions, { rot, zoom = 1, pan = [0, 0], point = 2, fade = false }) {
    const W = this.canvas.width;
    const H = this.canvas.height;
    const dpr = this.dpr || 1;
    const img = this.ctx.createImageData(W, H);
    const px = img.data;
    px.fill(255);
    const plot = (cx, cy, r, c) => {
      const x0 = Math.max(0, Math.round(cx - r));
      const x1 = Math.min(W - 1, Math.round(cx + r));
      const y0 = Math.max(0, Math.round(cy - r));
      const y1 = Math.min(H - 1, Math.round(cy + r));
      const a = c[3] / 255;
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          const o = 4 * (y * W + x);
          px[o] = px[o] * (1 - a) + c[0] * a;
          px[o + 1] = px[o + 1] * (1 - a) + c[1] * a;
          px[o + 2] = px[o + 2] * (1 - a) + c[2] * a;
        }
      }
    };
    for (const reg of regions) {
      const size = reg.w * dpr;
      const ox = reg.x * dpr;
      const oy = reg.y * dpr;
      // Plain points first, then search matches and emphasized points, then the selection on top.
      for (const pass of [0, 1, 2]) {
        for (let i = reg.offset; i < reg.offset + reg.count; i++) {
          const f = this.flags[i];
          const level = f & 4 ? 2 : f & 3 ? 1 : 0;
          if (level !== pass) continue;
          const [x, y] = projectPoint(pointAt(this.positions, i), rot, zoom, pan, size);
          if (x < 0 || y < 0 || x >= size || y >= size) continue;
          let c = [this.colors[4 * i], this.colors[4 * i + 1], this.colors[4 * i + 2], this.colors[4 * i + 3]];
          if (fade && level === 0) c = [c[0] + (255 - c[0]) * 0.7, c[1] + (255 - c[1]) * 0.7, c[2] + (255 - c[2]) * 0.7, c[3]];
          if (f & 1 && !(f & 2)) c = [c[0] * 0.85, c[1] * 0.85, c[2] * 0.85, c[3]];
          if (level === 2) c = [13, 13, 13, 255];
          const scale = level === 2 ? 3.5 : f & 1 ? 2 : 1;
          const r = Math.max(0.5, (point * dpr * (this.sizes ? this.sizes[i] : 1) * scale) / 2 - 0.5);
          plot(ox + x, oy + y, r, c);
        }
      }
    }
    this.ctx.putImageData(img, 0, 0);
  }

  inkPerRegion(regions) {
    const dpr = this.dpr || 1;
    return regions.map((r) => {
      const d = this.ctx.getImageData(Math.round(r.x * dpr), Math.round(r.y * dpr), Math.round(r.w * dpr), Math.round(r.h * dpr)).data;
      let ink = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245) ink++;
      return ink;
    });
  }
}

// A WebGL renderer where the browser has WebGL, else the CPU one.
function pointRenderer(canvas) {
  try {
    return new PointRenderer(canvas);
  } catch (err) {
    console.warn(`${err.message}: drawing without WebGL (slower)`);
    // A canvas that was asked for WebGL cannot give a 2D context: draw on a fresh one in its place.
    const fresh = canvas.cloneNode(false);
    canvas.replaceWith(fresh);
    app.renderer = 'canvas2d';
    return new CanvasPointRenderer(fresh);
  }
}

// Orbit rotation (yaw about y, then pitch about x), column-major for WebGL.
function rotation(yaw, pitch) {
  const cy = Math.cos(yaw); const sy = Math.sin(yaw);
  const cp = Math.cos(pitch); const sp = Math.sin(pitch);
  // R = Rx(pitch) * Ry(yaw)
  const m = [
    [cy, 0, sy],
    [sp * sy, cp, -sp * cy],
    [-cp * sy, sp, cp * cy],
  ];
  return new Float32Array([m[0][0], m[1][0], m[2][0], m[0][1], m[1][1], m[2][1], m[0][2], m[1][2], m[2][2]]);
}
const IDENTITY = new Float32Array([1, 0, 0, 0, 1, 0, 0, 0, 1]);

// Where a normalized point lands in a region of `size` CSS px (the vertex shader's mapping).
function projectPoint(p, rot, zoom, pan, size) {
  const v = [p[0] - 0.5, p[1] - 0.5, p[2] - 0.5];
  const x = rot[0] * v[0] + rot[3] * v[1] + rot[6] * v[2];
  const y = rot[1] * v[0] + rot[4] * v[1] + rot[7] * v[2];
  const cx = (x * zoom + pan[0]) * 1.9;
  const cy = (y * zoom + pan[1]) * 1.9;
  return [(cx + 1) / 2 * size, (1 - cy) / 2 * size];
}

// ---------------------------------------------------------------- app
const app = {
  meta: null,
  tokens: null,
  matrix: null,
  single: null,
  orbit: { yaw: 0.6, pitch: 0.35 },
  view: { zoom: 1, pan: [0, 0] },
  loads: {},
};
window.attnviz = app; // for scripts and the browser test
// Where a normalized point of the Single View is drawn, in CSS px of its canvas.
window.attnvizProject = (p) => projectPoint(p, rot(), singleZoom(), app.view.pan, app.singleSize);
// Where point `i` of the Single View is drawn.
window.attnvizSinglePoint = (i) => window.attnvizProject(pointAt(app.single.arrays.positions, i));

function projection() {
  const [method, dims] = (state.proj || '').split(':');
  return { method, dims: +dims || 2 };
}
const dims3 = () => projection().dims === 3;
const rot = () => (dims3() ? rotation(app.orbit.yaw, app.orbit.pitch) : IDENTITY);
// A rotated unit cube spans up to sqrt(3) of its side; shrink 3D views so that it stays in the box.
const fitZoom = () => (dims3() ? 0.62 : 1);
const singleZoom = () => app.view.zoom * fitZoom();
function searchParams() {
  return { search: EMBED ? '' : state.q, mode: state.exact && state.q ? 'exact' : '' };
}
function selection() {
  if (!state.sel) return {};
  const [token, role] = state.sel.split(':');
  return { token, role: role || 'query' };
}

async function init() {
  readHash();
  try {
    app.meta = await api('meta');
  } catch (err) {
    document.body.classList.add('failed');
    $('title').textContent = 'attnviz: cannot show this dataset';
    notice(err.message, true);
    return;
  }
  const m = app.meta;
  document.title = `attnviz: ${m.model.id}`;
  // Grouped-query attention: query heads of a group share one key head (their key points coincide).
  const kv = m.model.num_key_value_heads;
  const grouping = kv && kv !== m.model.num_heads ? ` (${kv} key heads, ${m.model.num_heads / kv} query heads each)` : '';
  const rope = m.model.rope ? `, rotary q/k ${m.model.rope === 'pre' ? 'before' : 'after'} rotation` : '';
  $('title').textContent = `${m.model.id}: ${m.model.num_layers} layers x ${m.model.num_heads} heads${grouping}${rope}, ${m.num_tokens} tokens`;
  if (m.projections.length === 0) {
    notice('This dataset has no projection yet: run `attnviz project <dataset>`.', true);
    return;
  }
  for (const p of m.projections) {
    $('projection').append(el('option', { value: `${p.method}:${p.dims}` }, `${p.method.toUpperCase()} ${p.dims}D (${p.heads} heads)`));
  }
  for (const e of m.encodings) $('encoding').append(el('option', { value: e }, e.replace(/_/g, ' ')));
  if (!m.projections.some((p) => `${p.method}:${p.dims}` === state.proj)) {
    const preferred = ['tsne:2', 'umap:2', 'pca:2'].find((k) => m.projections.some((p) => `${p.method}:${p.dims}` === k));
    state.proj = preferred || `${m.projections[0].method}:${m.projections[0].dims}`;
  }
  if (!m.encodings.includes(state.enc)) state.enc = 'query_key';
  // An export holds the Sentence / Image Views of a few sequences: offer only those.
  const embeddedSeqs = EMBED
    ? new Set(Object.keys(EMBED.responses).map((k) => /^(?:sentence|image)\?.*\bseq=(\d+)/.exec(k)).filter(Boolean).map((x) => Number(x[1])))
    : null;
  for (const s of m.sequences) {
    if (embeddedSeqs && !embeddedSeqs.has(s.seq_id)) continue;
    const label = `${s.seq_id}: ${s.preview}`;
    $('sentence-seq').append(el('option', { value: s.seq_id }, label));
    $('image-seq').append(el('option', { value: s.seq_id }, label));
  }
  if (EMBED) {
    notice(OFFLINE_HINT);
    $('search').disabled = true;
    $('exact').disabled = true;
  }
  app.tokens = await api('tokens').catch(() => null);
  app.renderer = 'webgl';
  app.matrixRenderer = pointRenderer($('matrix-canvas'));
  app.singleRenderer = pointRenderer($('single-canvas'));
  bindControls();
  syncControls();
  await render();
  window.addEventListener('hashchange', () => { readHash(); syncControls(); render().catch(report); });
}

function syncControls() {
  $('projection').value = state.proj;
  $('encoding').value = state.enc;
  $('search').value = state.q;
  $('exact').checked = state.exact;
  $('labels').checked = state.labels;
  $('size-by-norm').checked = state.size;
  $('fidelity-cells').checked = state.fid;
  $('hide-special').checked = state.hide;
  $('aggregate').checked = state.agg;
  $('image-mode').value = state.imode;
  document.body.classList.toggle('dims-3', dims3());
}

function setState(patch) {
  Object.assign(state, patch);
  writeHash();
  syncControls();
  return render().catch(report);
}

function bindControls() {
  $('projection').onchange = (e) => setState({ proj: e.target.value });
  $('encoding').onchange = (e) => setState({ enc: e.target.value });
  let timer = null;
  $('search').oninput = (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => setState({ q: e.target.value.trim() }), 250);
  };
  $('exact').onchange = (e) => setState({ exact: e.target.checked });
  $('fidelity-cells').onchange = (e) => setState({ fid: e.target.checked });
  $('to-matrix').onclick = () => setState({ view: 'matrix' });
  $('back').onclick = () => setState({ view: 'matrix' });
  $('to-similarity').onclick = () => setState({ view: 'similarity' });
  $('labels').onchange = (e) => setState({ labels: e.target.checked });
  $('size-by-norm').onchange = (e) => setState({ size: e.target.checked });
  $('clear-selection').onclick = () => setState({ sel: '', focus: '' });
  for (const dir of ['prev', 'next', 'up', 'down']) {
    $(`nav-${dir}`).onclick = () => {
      const h = app.single && app.single.header.nav[dir];
      if (h) setState({ head: headName(h) });
    };
  }
  // Arrow keys walk the heads in the Single View (not while typing); Escape goes back to the matrix.
  window.addEventListener('keydown', (ev) => {
    if (state.view !== 'single' || ev.target.closest('input, select, textarea')) return;
    const dir = { ArrowLeft: 'prev', ArrowRight: 'next', ArrowUp: 'up', ArrowDown: 'down' }[ev.key];
    if (dir) {
      ev.preventDefault();
      $(`nav-${dir}`).click();
    } else if (ev.key === 'Escape') {
      setState({ view: 'matrix' });
    }
  });
  $('sentence-seq').onchange = (e) => setState({ seq: e.target.value, agg: false, focus: '', hidden: '' });
  $('image-seq').onchange = (e) => setState({ seq: e.target.value, sel: '' });
  $('hide-special').onchange = (e) => setState({ hide: e.target.checked });
  $('aggregate').onchange = (e) => setState({ agg: e.target.checked, focus: '' });
  $('unhide').onclick = () => setState({ hidden: '', hide: false });
  $('image-mode').onchange = (e) => setState({ imode: e.target.value });
  // A resize only lays the views out again; the data stay.
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.view === 'matrix' && app.matrix) { layoutMatrix(); drawMatrix(); }
      if (state.view === 'single' && app.single) { sizeSingle(); drawSingle(); }
    }, 150);
  });
  bindMatrixPointer();
  bindSinglePointer();
  $('image-canvas').onclick = imageClick;
}

async function render() {
  for (const v of ['matrix', 'single', 'similarity']) $(`${v}-view`).hidden = state.view !== v;
  if (state.view === 'matrix') await renderMatrix();
  else if (state.view === 'single') await renderSingle();
  else await renderSimilarity();
  await renderSide();
}

// ---------------------------------------------------------------- Matrix View
async function renderMatrix() {
  const { method, dims } = projection();
  const t0 = performance.now();
  const frame = await api('matrix', { method, dims, encoding: state.enc, ...searchParams(), ...(EMBED ? {} : selection()) });
  app.loads.matrix = performance.now() - t0;
  app.matrix = frame;
  const { header, arrays } = frame;
  drawLegend($('legend'), header.legend);
  $('matches').textContent = header.search ? `${header.matched_tokens} tokens match` : '';
  app.matrixFlags = new Uint8Array(header.points);
  for (const c of header.cells) {
    for (const r of c.matches) app.matrixFlags[c.offset + r] |= 1;
    if (c.selected_row !== null && c.selected_row !== undefined) app.matrixFlags[c.offset + c.selected_row] |= 4;
  }
  app.matrixRenderer.upload(arrays.positions, arrays.colors, app.matrixFlags, null);
  layoutMatrix();
  drawMatrix();
  app.loads.matrixDrawn = performance.now() - t0;
  app.loads.matrixDrawnSinceNavigation = performance.now();
}

function layoutMatrix() {
  const h = app.matrix.header;
  const axis = 24;
  const avail = Math.max(300, $('matrix-view').clientWidth - axis - 4);
  const cell = Math.max(36, Math.min(170, Math.floor(avail / h.heads_per_layer)));
  const width = axis + cell * h.heads_per_layer;
  const height = axis + cell * h.layers;
  app.matrixRenderer.resize(width, height);
  const cells = $('matrix-cells');
  cells.style.width = `${width}px`;
  cells.style.height = `${height}px`;
  cells.replaceChildren();
  for (let c = 0; c < h.heads_per_layer; c++) {
    const a = el('div', { class: 'axis' }, `H${c}`);
    Object.assign(a.style, { left: `${axis + c * cell + cell / 2 - 8}px`, top: '4px' });
    cells.append(a);
  }
  for (let r = 0; r < h.layers; r++) {
    const a = el('div', { class: 'axis' }, `L${r}`);
    Object.assign(a.style, { left: '2px', top: `${axis + r * cell + cell / 2 - 8}px` });
    cells.append(a);
  }
  app.regions = h.cells.map((c) => {
    const x = axis + c.head.head * cell;
    const y = axis + c.head.layer * cell;
    const div = el('div', { class: 'cell', 'data-head': headName(c.head) });
    Object.assign(div.style, { left: `${x}px`, top: `${y}px`, width: `${cell}px`, height: `${cell}px` });
    div.append(el('span', { class: `trust ${c.info.trust.level}` }));
    if (state.fid) div.style.background = fidelityTint(c.info);
    if (h.search) div.append(el('span', { class: 'count' }, `${c.matches.length / 2 | 0}·${c.match_clusters}`));
    div.title = '';
    div.onmousemove = (ev) => showTooltip(ev, cellInfoText(c.head, c.info) + (h.search ? `\nmatches: ${c.matches.length} points in ${c.match_clusters} clusters` : ''));
    div.onmouseleave = hideTooltip;
    cells.append(div);
    return { x: x + 2, y: y + 2, w: cell - 4, h: cell - 4, offset: c.offset, count: c.count, head: c.head };
  });
  app.cellSize = cell;
}

function drawMatrix() {
  const fade = !!app.matrix.header.search;
  const point = Math.max(1.2, Math.min(3, app.cellSize / 70));
  app.matrixRenderer.draw(app.regions, { rot: rot(), zoom: fitZoom(), point, fade });
}

function bindMatrixPointer() {
  const cells = $('matrix-cells');
  let drag = null;
  cells.addEventListener('pointerdown', (ev) => { drag = { x: ev.clientX, y: ev.clientY, moved: false }; });
  window.addEventListener('pointermove', (ev) => {
    if (!drag || !dims3() || state.view !== 'matrix') return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (!drag.moved) return;
    app.orbit.yaw += dx * 0.01;
    app.orbit.pitch = Math.max(-1.5, Math.min(1.5, app.orbit.pitch + dy * 0.01));
    drag.x = ev.clientX;
    drag.y = ev.clientY;
    drawMatrix();
  });
  window.addEventListener('pointerup', () => { setTimeout(() => { drag = null; }, 0); });
  cells.addEventListener('click', (ev) => {
    if (drag && drag.moved) return;
    const cell = ev.target.closest('.cell');
    if (!cell) return;
    hideTooltip();
    setState({ view: 'single', head: cell.dataset.head });
  });
}

// ---------------------------------------------------------------- Single View
async function renderSingle() {
  const { method, dims } = projection();
  const t0 = performance.now();
  const params = {
    method, dims, encoding: state.enc, head: state.head, ...searchParams(),
    ...(EMBED ? {} : selection()),
    labels: !EMBED && state.labels, size_by_norm: !EMBED && state.size,
  };
  const frame = await api('single', params);
  app.loads.single = performance.now() - t0;
  app.single = frame;
  const h = frame.header;
  $('single-title').textContent = `${h.head ? headName(h.head) : state.head} (${h.method.toUpperCase()} ${h.dims}D)`;
  $('single-info').textContent = `trust ${h.info.trust.level}` + (h.search ? ` · ${h.matched_tokens} tokens match in ${h.match_clusters} clusters` : '')
    + (h.selected ? ` · selected ${h.selected.role} "${h.selected.text}" (sequence ${h.selected.seq_id}, position ${h.selected.position})` : '');
  $('single-info').title = cellInfoText(h.head, h.info);
  drawLegend($('single-legend'), h.legend);
  const n = h.count;
  const flags = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const f = frame.arrays.flags[i];
    flags[i] = (f & 1) | (f & 2);
  }
  if (h.selected) flags[h.selected.row] |= 4;
  app.singleRenderer.upload(frame.arrays.positions, frame.arrays.colors, flags, frame.arrays.sizes);
  app.singleFade = !!h.search || !!h.selected;
  sizeSingle();
  drawSingle();
  for (const b of ['prev', 'next', 'up', 'down']) $(`nav-${b}`).disabled = !h.nav[b];
}

function sizeSingle() {
  const size = Math.max(320, Math.min($('single-view').clientWidth - 8, window.innerHeight - 190));
  app.singleSize = size;
  app.singleRenderer.resize(size, size);
  $('single-wrap').style.height = `${size}px`;
  sizeCanvas($('single-overlay'), size, size);
}

function drawSingle() {
  const s = app.single;
  if (!s) return;
  const size = app.singleSize;
  const r = rot();
  app.singleRenderer.draw([{ x: 0, y: 0, w: size, h: size, offset: 0, count: s.header.count }],
    { rot: r, zoom: singleZoom(), pan: app.view.pan, point: s.header.count < 4000 ? 5 : 3, fade: app.singleFade });
  const ov = $('single-overlay');
  const ctx = ov.getContext('2d');
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, size, size);
  const P = (p) => projectPoint(p, r, singleZoom(), app.view.pan, size);
  for (const line of s.header.lines) {
    const [x0, y0] = P(line.from);
    const [x1, y1] = P(line.to);
    ctx.strokeStyle = `rgba(20,20,20,${Math.max(0.15, line.opacity)})`;
    ctx.lineWidth = 1 + 3 * line.weight;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  }
  if (s.header.selected) {
    const row = s.header.selected.row;
    const [x, y] = P(pointAt(s.arrays.positions, row));
    ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
  }
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#111';
  ctx.textBaseline = 'middle';
  // Labels were placed without overlap around their points in view units; keep that offset from
  // where the point is drawn now (after zoom, pan or rotation).
  const unit = size * singleZoom() * 0.95;
  for (const l of s.header.labels) {
    const [px, py] = P(pointAt(s.arrays.positions, l.row));
    ctx.fillText(l.text, px + (l.rect[0] - l.anchor[0]) * unit, py - ((l.rect[1] + l.rect[3]) / 2 - l.anchor[1]) * unit);
  }
}

function nearestPoint(ev) {
  const s = app.single;
  if (!s) return -1;
  const rect = $('single-canvas').getBoundingClientRect();
  const mx = ev.clientX - rect.left;
  const my = ev.clientY - rect.top;
  const r = rot();
  let best = -1;
  let bestD = 64; // within 8 px
  for (let i = 0; i < s.header.count; i++) {
    const [x, y] = projectPoint(pointAt(s.arrays.positions, i), r, singleZoom(), app.view.pan, app.singleSize);
    const d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}

function pointText(i) {
  const s = app.single;
  const token = s.arrays.tokens[i];
  const role = s.arrays.flags[i] & 4 ? 'key' : 'query';
  if (!app.tokens) return `${role} of token ${token}`;
  const t = app.tokens;
  const seq = app.meta.sequences.find((q) => q.seq_id === t.seq[token]);
  return `"${t.text[token]}" (${role})\nsequence ${t.seq[token]}, position ${t.pos[token]}${seq ? `\n${seq.preview}` : ''}`;
}

function bindSinglePointer() {
  const c = $('single-canvas');
  let drag = null;
  c.addEventListener('pointerdown', (ev) => { drag = { x: ev.clientX, y: ev.clientY, moved: false, shift: ev.shiftKey }; c.setPointerCapture(ev.pointerId); });
  c.addEventListener('pointermove', (ev) => {
    if (drag) {
      const dx = ev.clientX - drag.x;
      const dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (!drag.moved) return;
      if (dims3() && !drag.shift) {
        app.orbit.yaw += dx * 0.01;
        app.orbit.pitch = Math.max(-1.5, Math.min(1.5, app.orbit.pitch + dy * 0.01));
      } else {
        const k = 2 / (1.9 * app.singleSize);
        app.view.pan = [app.view.pan[0] + dx * k, app.view.pan[1] - dy * k];
      }
      drag.x = ev.clientX; drag.y = ev.clientY;
      hideTooltip();
      drawSingle();
      return;
    }
    const i = nearestPoint(ev);
    if (i >= 0) showTooltip(ev, pointText(i)); else hideTooltip();
  });
  c.addEventListener('pointerup', (ev) => {
    const wasDrag = drag && drag.moved;
    drag = null;
    if (wasDrag) return;
    const i = nearestPoint(ev);
    if (i < 0) return;
    if (EMBED) { notice(OFFLINE_HINT); return; }
    const token = app.single.arrays.tokens[i];
    const role = app.single.arrays.flags[i] & 4 ? 'key' : 'query';
    const patch = {};
    if (app.tokens) {
      patch.seq = String(app.tokens.seq[token]);
      patch.focus = String(app.tokens.pos[token]);
      patch.agg = false;
    }
    setState({ sel: `${token}:${role}`, ...patch });
  });
  c.addEventListener('pointerleave', hideTooltip);
  c.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const f = Math.exp(-ev.deltaY * 0.0015);
    app.view.zoom = Math.max(0.2, Math.min(50, app.view.zoom * f));
    app.view.pan = [app.view.pan[0] * f, app.view.pan[1] * f];
    drawSingle();
  }, { passive: false });
  c.addEventListener('dblclick', () => { app.view = { zoom: 1, pan: [0, 0] }; drawSingle(); });
}

// ---------------------------------------------------------------- side panel: Sentence / Image View
async function renderSide() {
  const m = app.meta;
  const show = state.view === 'single' && m.heads_with_attention > 0;
  $('side').hidden = !show;
  if (!show) return;
  $('sentence-panel').hidden = m.vision;
  $('image-panel').hidden = !m.vision;
  const seq = state.seq !== '' ? state.seq : String(m.sequences[0].seq_id);
  const { method, dims } = projection();
  try {
    if (m.vision) await renderImage(method, dims, seq);
    else await renderSentence(method, dims, seq);
  } catch (err) {
    report(err);
  }
}

async function renderSentence(method, dims, seq) {
  $('sentence-seq').value = seq;
  $('sentence-head').textContent = state.head;
  const params = { method, dims, head: state.head, hide_special: state.hide, hidden: state.hidden, focus: state.focus };
  if (state.agg) params.aggregate = true; else params.seq = seq;
  const view = await api('sentence', params);
  app.sentence = view;
  const svg = $('sentence-svg');
  svg.replaceChildren();
  const rowH = 18;
  const top = 24;
  const n = view.tokens.length;
  const W = 420;
  const xq = 150;
  const xk = 270;
  svg.setAttribute('height', top + n * rowH + 10);
  svg.setAttribute('width', W);
  svg.append(el('text', { x: xq, y: 12, 'text-anchor': 'end', class: 'muted' }, 'queries'), el('text', { x: xk, y: 12, class: 'muted' }, 'keys'));
  const y = (pos) => top + pos * rowH;
  const edges = el('g');
  for (const e of view.edges) {
    const line = el('line', {
      x1: xq + 6, y1: y(e.query), x2: xk - 6, y2: y(e.key),
      stroke: e.focused ? '#2a6fdb' : '#555',
      'stroke-opacity': Math.max(0.03, e.opacity).toFixed(3),
      'stroke-width': e.focused ? 2 : 1.2,
      'data-query': e.query, 'data-key': e.key, 'data-weight': e.weight,
    });
    line.append(el('title', {}, `${e.query} -> ${e.key}: ${fmt(e.weight)}`));
    edges.append(line);
  }
  svg.append(edges);
  const hidden = new Set((state.hidden || '').split(',').filter((s) => s !== '').map(Number));
  for (const t of view.tokens) {
    for (const side of ['query', 'key']) {
      const cls = [t.hidden ? 'hidden' : '', String(t.position) === state.focus ? 'focus' : ''].join(' ').trim();
      const text = el('text', {
        x: side === 'query' ? xq : xk, y: y(t.position) + 4, 'text-anchor': side === 'query' ? 'end' : 'start',
        class: cls, 'data-position': t.position, 'data-side': side,
      }, t.text);
      text.addEventListener('click', (ev) => {
        if (ev.altKey) { toggleHidden(hidden, t.position); return; }
        setState({ focus: String(t.position) === state.focus ? '' : String(t.position) });
      });
      text.addEventListener('contextmenu', (ev) => { ev.preventDefault(); toggleHidden(hidden, t.position); });
      svg.append(text);
    }
  }
}

function toggleHidden(hidden, pos) {
  if (hidden.has(pos)) hidden.delete(pos); else hidden.add(pos);
  setState({ hidden: [...hidden].sort((a, b) => a - b).join(',') });
}

async function renderImage(method, dims, seq) {
  $('image-seq').value = seq;
  $('image-head').textContent = state.head;
  const sel = selection();
  const view = await api('image', { method, dims, head: state.head, seq, ...(EMBED ? {} : sel) });
  app.image = view;
  const blob = await api('picture', { seq });
  const img = await createImageBitmap(blob);
  const canvas = $('image-canvas');
  const ctx = canvas.getContext('2d');
  const gridW = view.grid_cols;
  const gridH = view.grid_rows;
  const imgSize = canvas.height; // a strip to the right holds the CLS token
  const cw = imgSize / gridW;
  const ch = imgSize / gridH;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(img, 0, 0, imgSize, imgSize);
  // An ImageNode is {"patch": {row, col}} or "cls".
  const center = (node) => (node === 'cls'
    ? [imgSize + 20, 20]
    : [(node.patch.col + 0.5) * cw, (node.patch.row + 0.5) * ch]);
  // CLS box
  ctx.strokeStyle = '#333';
  ctx.strokeRect(imgSize + 8, 8, 24, 24);
  ctx.fillStyle = '#333';
  ctx.font = '9px system-ui';
  ctx.fillText('CLS', imgSize + 10, 44);
  if (state.imode === 'heatmap') {
    for (const c of view.heatmap) {
      ctx.fillStyle = `rgba(230,30,30,${c.alpha})`;
      ctx.fillRect(c.patch.col * cw, c.patch.row * ch, cw, ch);
    }
    if (view.cls && view.cls.alpha !== null && view.cls.alpha !== undefined) {
      ctx.fillStyle = `rgba(230,30,30,${view.cls.alpha})`;
      ctx.fillRect(imgSize + 8, 8, 24, 24);
    }
  } else if (state.imode === 'arrows') {
    for (const a of view.arrows) {
      arrow(ctx, [(a.from.col + 0.5) * cw, (a.from.row + 0.5) * ch], center(a.to), `rgba(20,20,20,${0.3 + 0.7 * a.weight})`, 1.2);
    }
  } else {
    for (const e of view.strong) {
      arrow(ctx, center(e.from), center(e.to), `rgba(20,60,200,${e.opacity})`, e.width);
    }
  }
  if (view.selected) {
    const s = view.selected;
    if (s.patch) {
      ctx.strokeStyle = '#ffd400'; ctx.lineWidth = 3;
      ctx.strokeRect(s.patch.col * cw, s.patch.row * ch, cw, ch);
      ctx.lineWidth = 1;
    }
  }
  app.imageGeom = { cw, ch, gridW, gridH, imgSize, seq };
}

function arrow(ctx, [x0, y0], [x1, y1], color, width) {
  ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = width;
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  const a = Math.atan2(y1 - y0, x1 - x0);
  const L = 5 + width;
  if (Math.hypot(x1 - x0, y1 - y0) < 1) { ctx.beginPath(); ctx.arc(x0, y0, 3, 0, 2 * Math.PI); ctx.stroke(); return; }
  ctx.beginPath();
  ctx.moveTo(x1, y1);
  ctx.lineTo(x1 - L * Math.cos(a - 0.4), y1 - L * Math.sin(a - 0.4));
  ctx.lineTo(x1 - L * Math.cos(a + 0.4), y1 - L * Math.sin(a + 0.4));
  ctx.closePath(); ctx.fill();
}

function imageClick(ev) {
  const g = app.imageGeom;
  if (!g || !app.tokens) return;
  if (EMBED) { notice(OFFLINE_HINT); return; }
  const rect = ev.target.getBoundingClientRect();
  const x = ev.clientX - rect.left;
  const y = ev.clientY - rect.top;
  if (x >= g.imgSize || y >= g.imgSize) return;
  const row = Math.floor(y / g.ch);
  const col = Math.floor(x / g.cw);
  const t = app.tokens;
  for (let i = 0; i < t.seq.length; i++) {
    if (String(t.seq[i]) === String(g.seq) && t.patch[i] && t.patch[i][0] === row && t.patch[i][1] === col) {
      setState({ sel: `${i}:query` });
      return;
    }
  }
}

// ---------------------------------------------------------------- head similarity
async function renderSimilarity() {
  const svg = $('similarity-svg');
  svg.replaceChildren();
  if (!app.meta.heads_with_attention) {
    notice('Head similarity needs attention matrices; this dataset has none.');
    return;
  }
  const { method, dims } = projection();
  const sim = await api('similarity', { method, dims });
  app.similarity = sim;
  const S = 640;
  const pad = 40;
  const xs = sim.layout.map((p) => p[0]);
  const ys = sim.layout.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0) || 1;
  const L = app.meta.model.num_layers;
  sim.heads.forEach((h, i) => {
    const x = pad + ((sim.layout[i][0] - x0) / span) * (S - 2 * pad);
    const y = S - pad - ((sim.layout[i][1] - y0) / span) * (S - 2 * pad);
    const hue = 260 - 220 * (L > 1 ? h.layer / (L - 1) : 0);
    const c = el('circle', { cx: x, cy: y, r: 7, fill: `hsl(${hue},70%,50%)`, 'data-head': headName(h) });
    c.append(el('title', {}, `${headName(h)} (layer ${h.layer})`));
    c.onclick = () => setState({ view: 'single', head: headName(h) });
    svg.append(c, el('text', { x: x + 9, y: y + 4, 'font-size': 10, fill: '#444' }, headName(h)));
  });
}

init().catch(report);
