#!/usr/bin/env python3
"""bench_serve.py: load benchmark for `smoe serve` (or any OpenAI-compatible server).

For each number of concurrent clients (default 1, 4, 16) every client sends --requests
streamed /v1/completions requests one after another, each asking for --tokens greedy tokens
(temperature 0, EOS ignored, so every answer has exactly that many) after a short prompt.
Reports aggregate generated tokens/s (all tokens over the wall time of that level) and
percentiles of request latency and time to first token. Python standard library only.

  scripts/bench_serve.py -m MODEL [-t THREADS]       starts build/smoe serve --parallel 16
  scripts/bench_serve.py --url http://127.0.0.1:8080  benchmarks a running server
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

PROMPTS = ["The capital of France is", "Once upon a time", "ROMEO:", "def fibonacci(n):",
           "In 1905, Einstein", "The best way to cook rice", "Dear diary,", "Q: What is 2+2?\nA:"]


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def one_request(host, port, body, headers):
    """Sends one completion; returns (latency s, time to first token s, tokens). Without
    streaming the time to first token is the latency."""
    conn = http.client.HTTPConnection(host, port, timeout=3600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    if not body.get("stream"):
        usage = json.loads(resp.read())["usage"]
        latency = time.perf_counter() - t0
        conn.close()
        return latency, latency, usage["completion_tokens"]
    ttft, tokens = None, None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            break
        chunk = json.loads(payload)
        if "error" in chunk:
            raise RuntimeError(f"stream error: {chunk['error']}")
        if ttft is None and chunk.get("choices"):
            ttft = time.perf_counter() - t0
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    latency = time.perf_counter() - t0
    conn.close()
    return latency, ttft if ttft is not None else latency, tokens or 0


def run_level(host, port, n_clients, args, headers):
    results, errors = [], []
    lock = threading.Lock()

    def client(i):
        for r in range(args.requests):
            body = {"prompt": args.prompt_tokens_list or PROMPTS[(i + r) % len(PROMPTS)],
                    "max_tokens": args.tokens, "temperature": 0, "ignore_eos": True}
            if not args.no_stream:
                body.update({"stream": True, "stream_options": {"include_usage": True}})
            if args.model_name:
                body["model"] = args.model_name
            try:
                res = one_request(host, port, body, headers)
                with lock:
                    results.append(res)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [r[0] for r in results]
    ttft = [r[1] for r in results]
    tokens = sum(r[2] for r in results)
    return {
        "clients": n_clients, "requests": len(results), "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "generated_tokens": tokens, "wall_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "latency_s": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                      "mean": statistics.fmean(lat) if lat else float("nan")},
        "ttft_s": {"p50": percentile(ttft, 50), "p90": percentile(ttft, 90), "p99": percentile(ttft, 99)},
    }


def start_server(args):
    binary = args.binary or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "smoe")
    cmd = [binary, "serve", "-m", args.model, "--port", "0", "--parallel", str(args.parallel),
           "--ctx-size", str(args.parallel * args.slot_ctx), "--queue", "256"]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:
        sys.stderr.write(line)
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
        if "ready" in line or "error" in line:
            break
    if port is None or proc.poll() is not None:
        raise SystemExit(f"bench_serve: the server did not start: {' '.join(cmd)}")
    threading.Thread(target=lambda: [sys.stderr.write(l) for l in proc.stderr], daemon=True).start()
    return proc, "127.0.0.1", port


def wait_health(host, port, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("bench_serve: the server never became ready")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", help="model to serve (starts build/smoe serve)")
    ap.add_argument("--url", help="benchmark a running server instead, e.g. http://127.0.0.1:8080")
    ap.add_argument("--binary", help="the smoe binary (default: build/smoe next to this script)")
    ap.add_argument("-t", "--threads", type=int, default=0, help="server forward-pass threads (0: all cores)")
    ap.add_argument("--parallel", type=int, default=16, help="server slots")
    ap.add_argument("--slot-ctx", type=int, default=256, help="context tokens per slot")
    ap.add_argument("--clients", default="1,4,16", help="concurrency levels")
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per request")
    ap.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--no-stream", action="store_true", help="plain JSON answers instead of server-sent events")
    ap.add_argument("--prompt-tokens", help="prompt as token ids 1,2,3 (models without a tokenizer)")
    ap.add_argument("--api-key", help="Bearer key for the server")
    ap.add_argument("--model-name", help="`model` field to send")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args()
    if bool(args.model) == bool(args.url):
        ap.error("give either -m MODEL or --url URL")
    args.prompt_tokens_list = [int(x) for x in args.prompt_tokens.split(",")] if args.prompt_tokens else None
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = "Bearer " + args.api_key

    proc = None
    if args.model:
        proc, host, port = start_server(args)
    else:
        u = urllib.parse.urlparse(args.url)
        host, port = u.hostname, u.port or 80
    try:
        wait_health(host, port)
        one_request(host, port, {"prompt": args.prompt_tokens_list or PROMPTS[0], "max_tokens": 2,
                                 "temperature": 0, "stream": True}, headers)  # warm-up
        levels = [run_level(host, port, int(c), args, headers) for c in args.clients.split(",")]
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"{'clients':>7} {'requests':>8} {'tokens':>7} {'wall s':>8} {'tok/s':>8} "
          f"{'lat p50':>8} {'lat p90':>8} {'lat p99':>8} {'ttft p50':>8} {'ttft p99':>8}")
    for r in levels:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['generated_tokens']:>7} {r['wall_s']:>8.2f} "
              f"{r['tokens_per_s']:>8.2f} {r['latency_s']['p50']:>8.3f} {r['latency_s']['p90']:>8.3f} "
              f"{r['latency_s']['p99']:>8.3f} {r['ttft_s']['p50']:>8.3f} {r['ttft_s']['p99']:>8.3f}")
        if r["errors"]:
            print(f"        {r['errors']} errors, first: {r['first_error']}")
    if args.json:
        print(json.dumps({"model": args.model, "url": args.url, "tokens": args.tokens,
                          "requests_per_client": args.requests, "levels": levels}))
    return 1 if any(r["errors"] for r in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
