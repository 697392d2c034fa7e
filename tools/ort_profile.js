// Per-operator profile of ONNX Runtime on V2-S, to set beside `env2 bench --profile`:
// where the peer spends its time, layer kind by layer kind.
//
//   node tools/ort_profile.js MODEL.onnx SIZE [THREADS=2] [RUNS=25] [TOP=40]
//   e.g. node tools/ort_profile.js build/ort/effv2s_384_b1.onnx 384 2
//
// The model comes from `make bench` (export_onnx.py writes build/ort/effv2s_*.onnx) and
// onnxruntime-node from tools/get_ort.sh (build/ort/node_modules).  The session options
// are ort_bench.js's (graph optimizations on, so BatchNorm is folded and the graph is in
// ORT's blocked NCHWc layout; SiLU shows up as QuickGelu).  ORT's profiler writes one
// event per node and run into a JSON file (name printed on stderr); this prints, per
// operator kind and input shape (channels@size, weights out x in x k), the median
// over the runs after the first 5 of each node's time, summed over the nodes of that kind,
// and the median model_run time.  Profiling adds some overhead to model_run.
'use strict';
const fs = require('fs');
const path = require('path');

function loadOrt() {
  const tries = [process.cwd(), path.join(__dirname, '..', 'build', 'ort'), '/tmp/ortbench'];
  for (const p of tries) {
    try { return require(require.resolve('onnxruntime-node', { paths: [p] })); } catch (e) { /* next */ }
  }
  throw new Error('onnxruntime-node not found: run sh tools/get_ort.sh (installs into build/ort)');
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main() {
  const [model, sizeArg, thrArg, runsArg, topArg] = process.argv.slice(2);
  if (!model || !sizeArg || model === '--help') {
    console.log('usage: node tools/ort_profile.js MODEL.onnx SIZE [THREADS=2] [RUNS=25] [TOP=40]');
    process.exit(model === '--help' ? 0 : 2);
  }
  const size = parseInt(sizeArg, 10), threads = parseInt(thrArg || '2', 10);
  const runs = parseInt(runsArg || '25', 10), top = parseInt(topArg || '40', 10);
  const ort = loadOrt();
  const prefix = path.join(require('os').tmpdir(), `ort_profile_${size}_${threads}`);
  const sess = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: prefix,
  });
  const data = new Float32Array(3 * size * size);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i);
  const x = new ort.Tensor('float32', data, [1, 3, size, size]);
  for (let i = 0; i < runs; i++) await sess.run({ [sess.inputNames[0]]: x });
  sess.endProfiling();
  // the file is named prefix_<date>.json; take the newest
  const dir = path.dirname(prefix), base = path.basename(prefix);
  const files = fs.readdirSync(dir).filter((f) => f.startsWith(base) && f.endsWith('.json'))
    .map((f) => path.join(dir, f)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (!files.length) throw new Error('no profile file written under ' + prefix);
  console.error('profile: ' + files[0]);
  const ev = JSON.parse(fs.readFileSync(files[0], 'utf8'));
  const runsEv = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run').map((e) => e.dur / 1000);
  const skip = Math.min(5, runsEv.length - 1);
  const per = new Map();
  for (const e of ev) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const k = e.name;
    if (!per.has(k)) per.set(k, { dur: [], args: e.args });
    per.get(k).dur.push(e.dur / 1000);
  }
  const groups = new Map();
  for (const { dur, args } of per.values()) {
    const m = median(dur.slice(Math.min(skip, dur.length - 1)));
    const shp = (args.input_type_shape || []).map((o) => Object.values(o)[0]);
    let key = args.op_name;
    if (args.op_name === 'Conv' && shp.length >= 2) {
      const xs = shp[0], w = shp[1];
      const out = (args.output_type_shape || []).map((o) => Object.values(o)[0])[0];
      key = `Conv ${xs[1]}@${xs[2]}x${xs[3]} w${w[0]}x${w[1]}k${w[2]}` + (out ? ` -> @${out[2]}x${out[3]}` : '') +
            (shp.length > 3 ? ' +sum' : '');
    } else if (shp.length) {
      key += ' [' + shp[0].join(',') + ']';
    }
    const g = groups.get(key) || { ms: 0, n: 0 };
    g.ms += m;
    g.n += 1;
    groups.set(key, g);
  }
  const rows = [...groups.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((s, r) => s + r[1].ms, 0);
  console.log(`ONNX Runtime ${size}x${size}, ${threads} threads: model_run median ${median(runsEv.slice(skip)).toFixed(2)} ms` +
              ` over ${runsEv.length - skip} runs, node times sum ${total.toFixed(2)} ms`);
  console.log('    ms  nodes  operator (input channels@HxW, weights out x in x k, output size; +sum: fused residual add)');
  for (const [k, g] of rows.slice(0, top)) console.log(`${g.ms.toFixed(3).padStart(6)}  ${String(g.n).padStart(5)}  ${k}`);
}
main().catch((e) => { console.error('ort_profile: ' + (e && e.message ? e.message : e)); process.exit(1); });
