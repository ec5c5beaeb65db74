// Drives the attnviz viewer in headless Chromium and prints what it observed as one JSON object on
// stdout; tests/tests/viewer.rs starts the server, runs this script and checks the observations
// against the dataset. Screenshots go to <outdir>.
//
//   node viewer.mjs interact <url> <outdir> <search text>   click through every view
//   node viewer.mjs load <url> <outdir>                     time loading the Matrix View
//   node viewer.mjs error <url> <outdir>                    the page of a missing dataset
//   node viewer.mjs notebook <url> <outdir>                 a notebook's output cell: the viewer in
//                                                           its <iframe srcdoc> (attnviz's Dataset.show)
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [modeArg, url, outdir, searchText] = process.argv.slice(2);
// `<mode>-nowebgl` runs the same steps in a browser without WebGL (the page's CPU fallback).
const noWebgl = (modeArg || '').endsWith('-nowebgl');
const mode = noWebgl ? modeArg.slice(0, -'-nowebgl'.length) : modeArg;
if (!mode || !url || !outdir) {
  console.error('usage: node viewer.mjs interact|load|error|image|offline|notebook[-nowebgl] <url> <outdir> [search]');
  process.exit(2);
}
mkdirSync(outdir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    ...(noWebgl ? ['--disable-webgl', '--disable-3d-apis'] : ['--use-angle=swiftshader', '--enable-unsafe-swiftshader']),
  ],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
// The error page is expected to log the failed request of the dataset it cannot show.
page.on('console', (m) => { if (m.type() === 'error' && mode !== 'error') pageErrors.push(m.text()); });
const out = { pageErrors };
const shot = (name) => page.screenshot({ path: join(outdir, `${name}.png`), fullPage: true });
// Waits until the viewer has finished its current render (no request in flight, frame drawn).
const settle = () => page.waitForLoadState('networkidle').then(() => page.waitForTimeout(150));

try {
  if (mode === 'error') {
    await page.goto(url);
    await page.waitForSelector('#notice.error', { timeout: 15000 });
    out.notice = await page.textContent('#notice');
    out.title = await page.textContent('#title');
    await shot('error');
  } else if (mode === 'load') {
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForFunction(() => window.attnviz && window.attnviz.loads && window.attnviz.loads.matrixDrawn > 0, null, { timeout: 120000 });
    await page.evaluate(() => window.attnviz.matrixRenderer.inkPerRegion(window.attnviz.regions.slice(0, 1)));
    out.load_ms = Date.now() - t0;
    out.loads = await page.evaluate(() => window.attnviz.loads);
    out.cells = await page.locator('.cell').count();
    out.points = await page.evaluate(() => window.attnviz.matrix.header.points);
    await shot('load');
  } else if (mode === 'interact') {
    // 1. Matrix View: every cell has drawn points.
    await page.goto(url);
    await page.waitForFunction(() => window.attnviz && window.attnviz.regions && window.attnviz.loads.matrixDrawn > 0, null, { timeout: 60000 });
    out.renderer = await page.evaluate(() => window.attnviz.renderer);
    out.cells = await page.locator('.cell').count();
    out.cell_ink = await page.evaluate(() => window.attnviz.matrixRenderer.inkPerRegion(window.attnviz.regions));
    out.cell_heads = await page.$$eval('.cell', (cs) => cs.map((c) => c.dataset.head));
    await shot('matrix');

    // Another projection: the same cells, drawn from the other layout (the server shares the
    // tokens and attention between projections).
    out.projections = await page.$$eval('#projection option', (os) => os.map((o) => o.value));
    await page.selectOption('#projection', 'pca:2');
    await page.waitForFunction(() => window.attnviz.matrix.header.method === 'pca', null, { timeout: 15000 });
    await settle();
    out.pca_cell_ink = await page.evaluate(() => window.attnviz.matrixRenderer.inkPerRegion(window.attnviz.regions));
    await page.selectOption('#projection', 'tsne:2');
    await page.waitForFunction(() => window.attnviz.matrix.header.method === 'tsne', null, { timeout: 15000 });
    await settle();

    // 2. Search: typed into the box; the page reports the count attn-viz-core computed.
    await page.fill('#search', searchText || 'the');
    await page.waitForFunction(() => window.attnviz.matrix.header.search !== null, null, { timeout: 15000 });
    await settle();
    out.search_label = await page.textContent('#matches');
    out.search_matched_tokens = await page.evaluate(() => window.attnviz.matrix.header.matched_tokens);
    out.search_points_per_cell = await page.evaluate(() => window.attnviz.matrix.header.cells.map((c) => c.matches.length));
    await shot('search');
    await page.fill('#search', '');
    await page.waitForFunction(() => window.attnviz.matrix.header.search === null, null, { timeout: 15000 });

    // 3. A click on a cell opens that head's Single View.
    const target = out.cell_heads[Math.min(1, out.cell_heads.length - 1)];
    out.clicked_head = target;
    await page.click(`.cell[data-head="${target}"]`);
    await page.waitForSelector('#single-view:not([hidden])', { timeout: 15000 });
    await page.waitForFunction(() => window.attnviz.single !== null, null, { timeout: 15000 });
    await settle();
    out.single_title = await page.textContent('#single-title');
    out.single_points = await page.evaluate(() => window.attnviz.single.header.count);
    out.single_ink = await page.evaluate(() => window.attnviz.singleRenderer.inkPerRegion([{ x: 0, y: 0, w: window.attnviz.singleSize, h: window.attnviz.singleSize }])[0]);
    await shot('single');

    // 4. Click a query point: it is selected, its attention lines appear, the Sentence View opens on
    //    its sentence with special tokens hidden and the weights renormalized.
    const box = await page.locator('#single-canvas').boundingBox();
    const pick = await page.evaluate(() => {
      const a = window.attnviz;
      const s = a.single;
      const t = a.tokens;
      // A query of a non-special token in the middle of its sentence.
      for (let i = 0; i < s.header.count; i++) {
        const tok = s.arrays.tokens[i];
        if ((s.arrays.flags[i] & 4) === 0 && !t.special[tok] && t.pos[tok] >= 2) {
          return { row: i, token: tok, xy: window.attnvizSinglePoint(i) };
        }
      }
      return null;
    });
    if (!pick) throw new Error('no query point to click');
    await page.mouse.click(box.x + pick.xy[0], box.y + pick.xy[1]);
    await page.waitForFunction(() => window.attnviz.single.header.selected !== null, null, { timeout: 15000 });
    await page.waitForSelector('#sentence-panel:not([hidden]) line', { state: 'attached', timeout: 15000 });
    await settle();
    out.selected = await page.evaluate(() => window.attnviz.single.header.selected);
    out.picked_token = pick.token;
    out.lines = await page.evaluate(() => window.attnviz.single.header.lines.map((l) => ({ weight: l.weight, to_row: l.to_row })));
    out.hash = await page.evaluate(() => location.hash);
    out.sentence = await page.evaluate(() => ({
      seq: document.getElementById('sentence-seq').value,
      head: document.getElementById('sentence-head').textContent,
      hidden: [...document.querySelectorAll('#sentence-svg text.hidden[data-side="query"]')].map((t) => +t.dataset.position),
      edges: [...document.querySelectorAll('#sentence-svg line')].map((l) => ({ q: +l.dataset.query, k: +l.dataset.key, w: +l.dataset.weight })),
    }));
    await shot('single_selected');

    // A smaller window lays the Single View out again, still drawn.
    await page.setViewportSize({ width: 900, height: 700 });
    await page.waitForFunction(() => window.attnviz.singleSize < 700, null, { timeout: 15000 });
    await page.waitForTimeout(100);
    out.resized_single_ink = await page.evaluate(() => window.attnviz.singleRenderer.inkPerRegion([{ x: 0, y: 0, w: window.attnviz.singleSize, h: window.attnviz.singleSize }])[0]);
    await page.setViewportSize({ width: 1400, height: 1000 });

        // 5. The URL holds the state: a fresh page on it shows the same head and selection.
    const fresh = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await fresh.goto(url + out.hash);
    await fresh.waitForFunction(() => window.attnviz && window.attnviz.single && window.attnviz.single.header.selected, null, { timeout: 30000 });
    out.restored = await fresh.evaluate(() => ({ title: document.getElementById('single-title').textContent, selected: window.attnviz.single.header.selected }));
    await fresh.close();

    // The arrow keys walk the heads.
    await page.keyboard.press('ArrowRight');
    await page.waitForFunction((t) => document.getElementById('single-title').textContent !== t, out.single_title, { timeout: 15000 });
    out.after_arrow = await page.textContent('#single-title');

    // 6. Head similarity: heads laid out, a click opens one.
    await page.click('#to-similarity');
    await page.waitForSelector('#similarity-svg circle', { timeout: 15000 });
    out.similarity_heads = await page.locator('#similarity-svg circle').count();
    await shot('similarity');
    out.similarity_clicked = await page.getAttribute('#similarity-svg circle >> nth=0', 'data-head');
    await page.click('#similarity-svg circle >> nth=0');
    await page.waitForSelector('#single-view:not([hidden])', { timeout: 15000 });
    await page.waitForFunction((h) => window.attnviz.single && document.getElementById('single-title').textContent.startsWith(h + ' '), out.similarity_clicked, { timeout: 15000 });
    out.similarity_opened = await page.textContent('#single-title');
  } else if (mode === 'image') {
    // A ViT dataset: the Image View beside the Single View; a click on a patch selects its query.
    await page.goto(url + '#view=single&head=L1H1');
    await page.waitForFunction(() => window.attnviz && window.attnviz.image && window.attnviz.imageGeom, null, { timeout: 30000 });
    await settle();
    out.default_image = await page.evaluate(() => window.attnviz.image);
    out.image_ink = await page.evaluate(() => {
      const c = document.getElementById('image-canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245)) ink++;
      return ink;
    });
    await shot('image_default');
    const g = await page.evaluate(() => window.attnviz.imageGeom);
    const box = await page.locator('#image-canvas').boundingBox();
    await page.mouse.click(box.x + 0.5 * g.cw, box.y + 0.5 * g.ch);
    await page.waitForFunction(() => { const s = window.attnviz.image.selected; return s && s.patch && s.patch.row === 0 && s.patch.col === 0; }, null, { timeout: 15000 });
    await settle();
    out.clicked_image = await page.evaluate(() => window.attnviz.image);
    for (const m of ['arrows', 'strong']) {
      await page.selectOption('#image-mode', m);
      await settle();
      await shot(`image_${m}`);
    }
  } else if (mode === 'offline') {
    // An exported file: no server behind it.
    await page.goto(url);
    await page.waitForFunction(() => window.attnviz && window.attnviz.regions && window.attnviz.loads.matrixDrawn > 0, null, { timeout: 60000 });
    out.cells = await page.locator('.cell').count();
    out.cell_ink = await page.evaluate(() => window.attnviz.matrixRenderer.inkPerRegion(window.attnviz.regions));
    out.notice = await page.textContent('#notice');
    out.search_disabled = await page.isDisabled('#search');
    await shot('offline_matrix');
    const heads = await page.$$eval('.cell', (cs) => cs.map((c) => c.dataset.head));
    out.clicked_head = heads[heads.length - 1];
    await page.click(`.cell[data-head="${out.clicked_head}"]`);
    await page.waitForFunction(() => window.attnviz.single !== null, null, { timeout: 15000 });
    await page.waitForSelector('#sentence-panel:not([hidden]) line', { state: 'attached', timeout: 15000 });
    out.single_title = await page.textContent('#single-title');
    out.single_points = await page.evaluate(() => window.attnviz.single.header.count);
    out.sentence_edges = await page.locator('#sentence-svg line').count();
    out.sequence_choices = await page.locator('#sentence-seq option').count();
    await shot('offline_single');
  } else if (mode === 'notebook') {
    // A page holding a notebook's rendered output: the exported viewer inside an iframe's srcdoc.
    await page.goto(url);
    const handle = await page.waitForSelector('iframe.attnviz-viewer', { timeout: 15000 });
    const frame = await handle.contentFrame();
    await frame.waitForFunction(() => window.attnviz && window.attnviz.regions && window.attnviz.loads.matrixDrawn > 0, null, { timeout: 60000 });
    out.frame_height = await handle.evaluate((f) => f.getBoundingClientRect().height);
    out.cells = await frame.locator('.cell').count();
    out.cell_ink = await frame.evaluate(() => window.attnviz.matrixRenderer.inkPerRegion(window.attnviz.regions));
    out.title = await frame.textContent('#title');
    await shot('notebook_matrix');
    const heads = await frame.$$eval('.cell', (cs) => cs.map((c) => c.dataset.head));
    out.clicked_head = heads[0];
    await frame.click(`.cell[data-head="${out.clicked_head}"]`);
    await frame.waitForFunction(() => window.attnviz.single !== null, null, { timeout: 15000 });
    out.single_title = await frame.textContent('#single-title');
    out.single_points = await frame.evaluate(() => window.attnviz.single.header.count);
    await shot('notebook_single');
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  out.ok = true;
} catch (err) {
  out.ok = false;
  out.error = String(err && err.stack || err);
  try { await shot('failure'); } catch { /* the page may be gone */ }
}
await browser.close();
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
