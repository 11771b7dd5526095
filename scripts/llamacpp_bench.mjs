#!/usr/bin/env node
// scripts/llamacpp_bench.mjs: llama.cpp's prompt-processing and generation speed on GGUF
// files, measured the way `smoe bench` measures smoe's, so both engines can be timed in one
// sitting on one machine. llama.cpp is the prebuilt CPU binary of the npm package
// node-llama-cpp (installed by scripts/llamacpp_check.sh into build/llamacpp-check/); only its
// public API is used (getLlama, loadModel, createContext, LlamaContextSequence.evaluate).
//
// Per file and repetition, after one untimed warm-up pass: a prompt of -p random token ids
// evaluated as one batch (batch size = -p) from an empty cache, then -n tokens generated
// greedily one at a time after BOS. Prints pp and tg tokens/s (median, min, max) per file;
// --json adds one JSON object per file.
//
// Usage: node scripts/llamacpp_bench.mjs [--modules DIR] [-p 512] [-n 64] [-t 2] [--reps 3] MODEL.gguf ...
// The files need an embedded vocabulary (`smoe synth --tokenizer ...` gives synthetic ones one).

import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const opts = { modules: process.env.LLAMACPP_CHECK_DIR || join(repoRoot, "build", "llamacpp-check"),
               p: 512, n: 64, t: 2, reps: 3, json: false, files: [] };
const argv = process.argv.slice(2);
function usage(msg) {
    console.error(`llamacpp_bench: ${msg}\nusage: node scripts/llamacpp_bench.mjs [--modules DIR] [-p N] [-n N] [-t N] [--reps R] [--json] MODEL.gguf ...`);
    process.exit(2);
}
for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
        const v = Number(argv[++i]);
        if (!Number.isInteger(v) || v < 0) usage(`${a} needs a whole number >= 0`);
        return v;
    };
    if (a === "--modules") opts.modules = resolve(argv[++i] ?? usage("--modules needs a value"));
    else if (a === "-p") opts.p = num();
    else if (a === "-n") opts.n = num();
    else if (a === "-t") opts.t = num();
    else if (a === "--reps") opts.reps = num();
    else if (a === "--json") opts.json = true;
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else opts.files.push(resolve(a));
}
if (opts.files.length === 0) usage("no model files given");
if (opts.t < 1 || opts.reps < 1 || opts.p + opts.n === 0) usage("-t and --reps must be >= 1, and -p + -n > 0");
const entry = join(opts.modules, "node_modules", "node-llama-cpp", "dist", "index.js");
if (!existsSync(entry)) usage(`node-llama-cpp not found under ${opts.modules} (run scripts/llamacpp_check.sh once to install it)`);
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                               progressLogs: false, maxThreads: opts.t, logLevel: LlamaLogLevel.error });

const stats = (v) => {
    if (v.length === 0) return { median: 0, min: 0, max: 0 };
    const s = [...v].sort((a, b) => a - b), k = s.length;
    return { median: k % 2 ? s[(k - 1) / 2] : (s[k / 2 - 1] + s[k / 2]) / 2, min: s[0], max: s[k - 1] };
};
let seed = 12345;
const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };

let failed = false;
for (const file of opts.files) {
    let model, context;
    try {
        model = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: true });
        const ctxSize = Math.max(opts.p, opts.n + 1) + 16;
        context = await model.createContext({ contextSize: ctxSize, batchSize: Math.max(opts.p, 1), threads: opts.t, sequences: 1 });
        const seq = context.getSequence();
        // Token ids 3..999 exist in every vocabulary of interest; speed does not depend on them.
        const prompt = () => Array.from({ length: opts.p }, () => 3 + rand(997));
        async function runPrompt() {
            await seq.clearHistory();
            const t0 = process.hrtime.bigint();
            await seq.controlledEvaluate(prompt().map((t, i, a) => (i === a.length - 1 ? [t, { generateNext: { token: true } }] : t)));
            return opts.p / (Number(process.hrtime.bigint() - t0) / 1e9);
        }
        async function runGen() {
            await seq.clearHistory();
            let count = 0, t0 = 0n;
            // The first yielded token needs BOS's pass; timing starts after it, as in smoe bench.
            for await (const _ of seq.evaluate([model.tokens.bos ?? 1], { temperature: 0 })) {
                if (count === 0) t0 = process.hrtime.bigint();
                if (++count > opts.n) break;
            }
            return opts.n / (Number(process.hrtime.bigint() - t0) / 1e9);
        }
        if (opts.p > 0) await runPrompt();  // warm-up: pages the weights in
        else await runGen();
        const pp = [], tg = [];
        for (let r = 0; r < opts.reps; r++) {
            if (opts.p > 0) pp.push(await runPrompt());
            if (opts.n > 0) tg.push(await runGen());
        }
        const s = { model: file, threads: opts.t, n_prompt: opts.p, n_gen: opts.n, reps: opts.reps,
                    pp: stats(pp), tg: stats(tg), engine: "llama.cpp (node-llama-cpp 3.21.1 prebuilt CPU)" };
        console.log(`${basename(file)} | pp${opts.p} ${s.pp.median.toFixed(1)} tok/s (${s.pp.min.toFixed(1)}-${s.pp.max.toFixed(1)}) | ` +
                    `tg${opts.n} ${s.tg.median.toFixed(2)} tok/s (${s.tg.min.toFixed(2)}-${s.tg.max.toFixed(2)})`);
        if (opts.json) console.log(JSON.stringify(s));
    } catch (e) {
        failed = true;
        console.log(`${basename(file)} | FAILED: ${e?.message ?? e}`);
    } finally {
        if (context) await context.dispose();
        if (model) await model.dispose();
    }
}
await llama.dispose();
process.exit(failed ? 1 : 0);
