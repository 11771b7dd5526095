#!/usr/bin/env python3
"""speed_table.py: the README's speed table in one command: smoe and llama.cpp on the same
synthetic Mixtral-shaped GGUF files, alternating file by file in one sitting.

For each type it makes the model file when it is missing (`smoe synth`, Mixtral 8x7B dims
with --layers layers and the Mistral tokenizer embedded, so llama.cpp can load it), runs
`build/smoe bench --json`, then `scripts/llamacpp_bench.mjs --json` on the same file (when
node-llama-cpp is installed: `bash scripts/llamacpp_check.sh` does that), and prints one
markdown row per type as it goes: prompt and generation tokens/s (medians), bytes read per
generated token, the machine's read probe, the decode roofline fraction, the kernels' own
read rate, llama.cpp's figures and the ratios. Another process loading the machine's memory
shows as a low probe in that row; compare rows of one sitting only.

  scripts/speed_table.py                                  every type, files in /tmp/smoe-speed
  scripts/speed_table.py --types q4_0,q8_0 --no-llama     smoe only
  scripts/speed_table.py --json-out sitting.json          also keep the raw JSON of every run
Python standard library only.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(ROOT), "shared", "fixtures")
TYPES = ["q4_0", "q8_0", "f16", "bf16", "q6_K", "q5_K", "q4_K", "q3_K", "q2_K"]


def last_json_line(text, what):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what}: no JSON line in its output:\n{text[-2000:]}")


def run(cmd, what):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(TYPES),
                    help=f"comma-separated weight types (of {','.join(TYPES)}); each file takes 0.5-2.5 min "
                         "to make on 2 cores (q2_K/q3_K the longest)")
    ap.add_argument("--dir", default="/tmp/smoe-speed", help="where the model files are kept (made when missing)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--config", default=os.path.join(FIXTURES, "configs", "mixtral-8x7b-v0.1.config.json"))
    ap.add_argument("--tokenizer", default=os.path.join(FIXTURES, "tokenizers", "mistral-v1.model"))
    ap.add_argument("-p", type=int, default=512, help="prompt tokens")
    ap.add_argument("-n", type=int, default=64, help="generated tokens")
    ap.add_argument("-t", type=int, default=2, help="threads (both engines)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-llama", action="store_true", help="time smoe only")
    ap.add_argument("--json-out", help="write every run's JSON here")
    ap.add_argument("--smoe", default=os.path.join(ROOT, "build", "smoe"), help="the smoe binary (build/smoe)")
    a = ap.parse_args()

    types = [t for t in a.types.split(",") if t]
    bad = [t for t in types if t not in TYPES]
    if bad or not types:
        ap.error(f"unknown type(s) {','.join(bad) or '(none)'}; expected some of {','.join(TYPES)}")
    if a.layers < 1 or a.p < 0 or a.n < 1 or a.t < 1 or a.reps < 1:
        ap.error("--layers, -n, -t and --reps must be >= 1 and -p >= 0")
    smoe = a.smoe
    if not os.access(smoe, os.X_OK):
        sys.exit(f"speed_table: {smoe} not found; build first (scripts/build.sh)")
    for f, what in ((a.config, "--config"), (a.tokenizer, "--tokenizer")):
        if not os.path.isfile(f):
            sys.exit(f"speed_table: {what} {f} not found (the shared fixtures hold the defaults)")
    llama = not a.no_llama
    modules = os.environ.get("LLAMACPP_CHECK_DIR", os.path.join(ROOT, "build", "llamacpp-check"))
    if llama and not os.path.isdir(os.path.join(modules, "node_modules", "node-llama-cpp")):
        print(f"speed_table: node-llama-cpp is not installed in {modules} (bash scripts/llamacpp_check.sh "
              "installs it); timing smoe only", file=sys.stderr)
        llama = False
    os.makedirs(a.dir, exist_ok=True)

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                            text=True).stdout.strip() or "unknown"
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, commit {commit}, {a.layers} layers, "
          f"pp{a.p} / tg{a.n}, {a.t} threads, {a.reps} reps (medians)\n")
    print("| type | smoe pp tok/s | smoe tg tok/s | GB read per token | probe GB/s | roofline | kernels GB/s"
          + (" | llama.cpp pp / tg | smoe / llama.cpp pp, tg |" if llama else " |"))
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---:" + (" | --- | --- |" if llama else " |"), flush=True)
    runs = []
    for t in types:
        path = os.path.join(a.dir, f"mixtral-{a.layers}l-{t}.gguf")
        if not os.path.exists(path):
            print(f"speed_table: making {path}", file=sys.stderr, flush=True)
            run([smoe, "synth", "--config", a.config, "--layers", str(a.layers), "--type", t,
                 "--tokenizer", a.tokenizer, "--out", path], "smoe synth")
        s = last_json_line(run([smoe, "bench", "-m", path, "-p", str(a.p), "-n", str(a.n), "-t", str(a.t),
                                "--reps", str(a.reps), "--json"], "smoe bench"), "smoe bench")
        row = (f"| {t} | {s['pp_tokens_per_s']:.0f} | {s['tg_tokens_per_s']:.1f} | {s['bytes_per_token'] / 1e9:.3f} "
               f"| {s['read_GBps']:.1f} | {100 * s['roofline_fraction']:.0f}% | {s['kernel_read_GBps']:.1f} |")
        entry = {"type": t, "time": time.strftime("%H:%M:%S"), "smoe": s}
        if llama:
            out = run(["node", os.path.join(ROOT, "scripts", "llamacpp_bench.mjs"), "--modules", modules, "-p",
                       str(a.p), "-n", str(a.n), "-t", str(a.t), "--reps", str(a.reps), "--json", path],
                      "llamacpp_bench")
            ll = last_json_line(out, "llamacpp_bench")
            lpp, ltg = ll["pp"]["median"], ll["tg"]["median"]
            pp_ratio = f"{s['pp_tokens_per_s'] / lpp:.2f}x" if lpp > 0 else "-"
            row += f" {lpp:.0f} / {ltg:.1f} | {pp_ratio}, {s['tg_tokens_per_s'] / ltg:.2f}x |"
            entry["llama"] = ll
        print(row, flush=True)
        runs.append(entry)
    if any(r["smoe"].get("amx") for r in runs if r["type"] in ("f16", "bf16")):
        print("\nsmoe ran the f16/bf16 prompt batches on AMX-BF16 tiles (SMOE_AMX=0 switches them off).")
    if any(r["smoe"].get("amx_int8") for r in runs if r["type"].endswith("_K")):
        print("\nsmoe ran the K-quant prompt batches on AMX-INT8 tiles (SMOE_AMX=0 switches them off).")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"commit": commit, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        sys.exit(f"speed_table: {e}")
