#!/usr/bin/env node
// scripts/llamacpp_check.mjs: checks that llama.cpp loads GGUF files written by smoe and
// computes the same next-token distributions as smoe on them.
//
// llama.cpp is used through the prebuilt CPU binary of the npm package node-llama-cpp
// (public API only: getLlama, loadModel, createContext, LlamaContextSequence.controlledEvaluate,
// which returns the full next-token probability vector of every evaluated position; the API
// exposes no raw logits, so logits are compared as log-probabilities, i.e. up to the per-position
// constant that softmax removes). smoe's side comes from `smoe tokenize`, `smoe run` and
// `smoe logits`.
//
// For each file, one line: load ok, prompt tokenization agreement, number of compared positions,
// max |log p(llama.cpp) - log p(smoe)| over positions and vocabulary, mean KL(llama.cpp || smoe)
// over positions, top-1 agreement, and the number of equal leading tokens of the two greedy
// continuations. The compared positions are BOS + prompt + llama.cpp's greedy continuation
// (minus its last token), so both engines see exactly the same tokens.
//
// Usage (normally through scripts/llamacpp_check.sh, which installs node-llama-cpp@3.21.1):
//   node scripts/llamacpp_check.mjs [--modules DIR] [--smoe PATH] [--prompt TEXT] [-n N]
//        [--kv f16|f32] [-t THREADS] [--json OUT.json] [--smoe-arg ARG ...] MODEL.gguf [MODEL2.gguf ...]
// --modules DIR: folder whose node_modules holds node-llama-cpp (default: $LLAMACPP_CHECK_DIR
// or build/llamacpp-check). --kv: llama.cpp's KV cache type (f16 is llama.cpp's default; smoe
// keeps it in f32). --smoe-arg ARG (repeatable): extra option for `smoe run` and `smoe logits`,
// e.g. `--smoe-arg --no-repack` or `--smoe-arg --load --smoe-arg mmap`. Exit status: 0 if every file loaded and was compared, 1 if any file failed
// to load (or evaluate) in llama.cpp or smoe, 2 on usage errors.

import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function usage(msg) {
    if (msg) console.error(`llamacpp_check: ${msg}`);
    console.error("usage: node scripts/llamacpp_check.mjs [--modules DIR] [--smoe PATH] [--prompt TEXT] [-n N] " +
        "[--kv f16|f32] [-t THREADS] [--json OUT.json] [--smoe-arg ARG ...] MODEL.gguf [...]");
    process.exit(2);
}

const opts = {
    modules: process.env.LLAMACPP_CHECK_DIR || join(repoRoot, "build", "llamacpp-check"),
    smoe: join(repoRoot, "build", "smoe"),
    prompt: "ROMEO:\nWhat light",
    n: 32,
    kv: "f16",
    threads: 1,
    json: null,
    smoeArgs: [],
    files: [],
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
        if (i + 1 >= argv.length) usage(`${a} needs a value`);
        return argv[++i];
    };
    if (a === "--modules") opts.modules = resolve(val());
    else if (a === "--smoe") opts.smoe = resolve(val());
    else if (a === "--prompt") opts.prompt = val();
    else if (a === "-n") opts.n = parseInt(val(), 10);
    else if (a === "--kv") opts.kv = val();
    else if (a === "-t" || a === "--threads") opts.threads = parseInt(val(), 10);
    else if (a === "--json") opts.json = resolve(val());
    else if (a === "--smoe-arg") opts.smoeArgs.push(val());
    else if (a === "-h" || a === "--help") usage();
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else opts.files.push(resolve(a));
}
if (opts.files.length === 0) usage("no model files given");
if (!(opts.n >= 1)) usage("-n must be at least 1");
if (!(opts.threads >= 1)) usage("-t must be at least 1");
if (opts.kv !== "f16" && opts.kv !== "f32") usage("--kv must be f16 or f32");
if (!existsSync(opts.smoe)) usage(`smoe binary not found: ${opts.smoe} (build it first)`);

const entry = join(opts.modules, "node_modules", "node-llama-cpp", "dist", "index.js");
if (!existsSync(entry))
    usage(`node-llama-cpp not found under ${opts.modules} (run scripts/llamacpp_check.sh, which installs it)`);
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const work = mkdtempSync(join(tmpdir(), "llamacpp-check-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

function smoe(args, input) {
    return execFileSync(opts.smoe, args, {
        input, encoding: "utf8", maxBuffer: 1 << 28, stdio: ["pipe", "pipe", "pipe"],
    });
}

// log-softmax of one row of float32 logits, in float64.
function logSoftmax(row) {
    let max = -Infinity;
    for (const v of row) if (v > max) max = v;
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const lse = max + Math.log(sum);
    const out = new Float64Array(row.length);
    for (let i = 0; i < row.length; i++) out[i] = row[i] - lse;
    return out;
}

// The full next-token distribution as llama.cpp computes it: temperature 1 and every
// truncation off, so the map is softmax(logits) over the whole vocabulary.
const fullDistribution = {
    probabilities: true,
    options: { temperature: 1, topK: 0, topP: 1, minP: 0 },
};

// llama.cpp's log messages (errors and warnings) are collected so a failed load can be
// reported with them.
let llamaLog = [];
const llama = await getLlama({
    gpu: false,              // the CPU binary
    build: "never",          // never compile llama.cpp from source
    usePrebuiltBinaries: true,
    skipDownload: true,      // never download llama.cpp's sources or binaries
    progressLogs: false,
    maxThreads: opts.threads,
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => { llamaLog.push(`[${level}] ${message.trimEnd()}`); },
});

async function checkFile(file) {
    const name = basename(file);
    const res = { file, name };
    if (!existsSync(file)) return { ...res, error: `file not found: ${file}` };

    llamaLog = [];
    let model;
    try {
        model = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: true, checkTensors: true });
    } catch (e) {
        await new Promise((r) => setTimeout(r, 200)); // llama.cpp's log lines arrive asynchronously
        const log = llamaLog.filter((l) => !l.startsWith("[warn]") || /error|fail|invalid/i.test(l));
        return { ...res, stage: "llama.cpp load", error: `llama.cpp failed to load the model: ${e.message}` + (log.length ? `\n${log.join("\n")}` : "") };
    }
    // smoe: tokens of the prompt.
    let promptIds;
    try {
        promptIds = JSON.parse(smoe(["tokenize", "-m", file], opts.prompt));
    } catch (e) {
        await model.dispose();
        return { ...res, stage: "smoe", error: `smoe tokenize failed: ${(e.stderr || e.message).toString().trim()}` };
    }
    let context;
    try {
        const bos = model.tokens.bos;
        if (bos == null) return { ...res, error: "llama.cpp: the model has no BOS token" };
        res.bos = bos;
        const llamaPrompt = model.tokenize(opts.prompt);
        res.tokensAgree = llamaPrompt.length === promptIds.length && llamaPrompt.every((t, i) => t === promptIds[i]);
        res.promptIds = promptIds;
        res.llamaPromptIds = llamaPrompt;

        const prefix = [bos, ...promptIds];
        const ctxSize = Math.max(64, prefix.length + opts.n + 8);
        context = await model.createContext({
            model, contextSize: ctxSize, batchSize: ctxSize, sequences: 1, threads: opts.threads,
            flashAttention: false,
            experimentalKvCacheKeyType: opts.kv.toUpperCase(),
            experimentalKvCacheValueType: opts.kv.toUpperCase(),
        });
        const seq = context.getSequence();

        // Evaluate the prompt with the full distribution at every position, then continue greedily
        // (argmax of the distribution), one token at a time, keeping every distribution.
        const dists = [];
        const out = await seq.controlledEvaluate(prefix.map((t) => [t, { generateNext: fullDistribution }]));
        for (let i = 0; i < prefix.length; i++) {
            const p = out[i]?.next?.probabilities;
            if (!p) throw new Error(`llama.cpp returned no probabilities for prompt position ${i}`);
            dists.push(p);
        }
        const llamaGen = [];
        for (;;) {
            const last = dists[dists.length - 1];
            const next = last.entries().next().value[0]; // the map is sorted by probability
            llamaGen.push(next);
            if (llamaGen.length === opts.n) break;
            const o = await seq.controlledEvaluate([[next, { generateNext: fullDistribution }]]);
            const p = o[0]?.next?.probabilities;
            if (!p) throw new Error(`llama.cpp returned no probabilities for generated token ${llamaGen.length}`);
            dists.push(p);
        }
        res.llamaGen = llamaGen;

        // smoe: greedy continuation and logits of the same token sequence llama.cpp evaluated.
        const runOut = JSON.parse(smoe(["run", "-m", file, "--prompt-tokens", prefix.join(","), "--temp", "0",
            "-n", String(opts.n), "--json", "--ignore-eos", "-t", String(opts.threads), ...opts.smoeArgs]));
        res.smoeGen = runOut.tokens;
        const seqTokens = [...prefix, ...llamaGen.slice(0, -1)];
        const logitsFile = join(work, "logits.f32");
        smoe(["logits", "-m", file, "--tokens", seqTokens.join(","), "--out", logitsFile, "-t", String(opts.threads), ...opts.smoeArgs]);
        const buf = readFileSync(logitsFile);
        const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
        const vocab = all.length / seqTokens.length;
        if (!Number.isInteger(vocab) || dists.length !== seqTokens.length)
            throw new Error(`smoe logits: ${all.length} floats for ${seqTokens.length} positions`);
        res.vocab = vocab;

        let maxDiff = 0, klSum = 0, top1 = 0, missing = 0;
        for (let pos = 0; pos < seqTokens.length; pos++) {
            const ls = logSoftmax(all.subarray(pos * vocab, (pos + 1) * vocab));
            let smoeTop = 0;
            for (let i = 1; i < vocab; i++) if (ls[i] > ls[smoeTop]) smoeTop = i;
            const p = dists[pos];
            missing += vocab - p.size;
            let kl = 0;
            for (const [tok, prob] of p) {
                if (!(prob > 0)) continue;
                const d = Math.log(prob) - ls[tok];
                kl += prob * d;
                if (Math.abs(d) > maxDiff) maxDiff = Math.abs(d);
            }
            klSum += kl;
            if (p.entries().next().value[0] === smoeTop) top1++;
        }
        res.positions = seqTokens.length;
        res.maxLogitDiff = maxDiff;
        res.meanKL = klSum / seqTokens.length;
        res.top1 = top1 / seqTokens.length;
        res.missingProbs = missing;
        let lead = 0;
        while (lead < opts.n && llamaGen[lead] === res.smoeGen[lead]) lead++;
        res.greedyLead = lead;
        res.llamaText = model.detokenize(llamaGen);
        res.smoeText = runOut.text;
        return res;
    } catch (e) {
        return { ...res, stage: "evaluation", error: `evaluation failed: ${(e.stderr || e.message).toString().trim()}` };
    } finally {
        if (context) await context.dispose();
        await model.dispose();
    }
}

console.log(`llama.cpp ${llama.llamaCppRelease?.release ?? "?"} (${llama.buildType}) via node-llama-cpp (CPU, ${opts.threads} thread(s), KV cache ${opts.kv}); ` +
    `smoe ${opts.smoeArgs.length ? opts.smoeArgs.join(" ") : "defaults"}; prompt ${JSON.stringify(opts.prompt)} with BOS, ${opts.n} greedy tokens`);
console.log("file | load | tokenizer | positions | max |dlogp| | mean KL(llama||smoe) | top-1 | greedy lead");
const results = [];
let failed = 0;
for (const file of opts.files) {
    const r = await checkFile(file);
    results.push(r);
    if (r.error) {
        failed++;
        console.log(`${r.name} | FAILED (${r.stage ?? "file"}) | - | - | - | - | - | -`);
        console.error(`llamacpp_check: ${r.name}: ${r.error}`);
        continue;
    }
    console.log(`${r.name} | ok | ${r.tokensAgree ? "same" : "DIFFERENT"} | ${r.positions} | ${r.maxLogitDiff.toExponential(2)} | ` +
        `${r.meanKL.toExponential(2)} | ${(r.top1 * 100).toFixed(1)}% | ${r.greedyLead}/${opts.n}`);
    if (!r.tokensAgree)
        console.error(`llamacpp_check: ${r.name}: prompt tokens differ: smoe ${JSON.stringify(r.promptIds)}, llama.cpp ${JSON.stringify(r.llamaPromptIds)}`);
    if (r.missingProbs > 0)
        console.error(`llamacpp_check: ${r.name}: llama.cpp left out ${r.missingProbs} zero probabilities (not counted)`);
}
if (opts.json) writeFileSync(opts.json, JSON.stringify({ options: { ...opts, files: undefined }, results }, null, 1));
// The exit status is set first: after a failed load, disposing of llama.cpp may never settle,
// and node then exits as soon as nothing is left to wait for.
process.exitCode = failed > 0 ? 1 : 0;
if (failed > 0) console.error(`llamacpp_check: ${failed} of ${opts.files.length} file(s) FAILED (see above)`);
await llama.dispose();
process.exit(process.exitCode);
