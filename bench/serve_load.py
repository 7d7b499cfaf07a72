"""Load generator for bench/serve: C concurrent clients send N requests (SAMSum dialogues, in order) to
POST URL/ as {"inputs": dialogue}; prints one JSON line: requests/s, p50/p95 latency, errors, summaries.

  python bench/serve_load.py URL CLIENTS REQUESTS DIALOGUES.jsonl OUT.json
"""
import http.client, json, sys, threading, time
from urllib.parse import urlparse

url, clients, total, data, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
u = urlparse(url)
dialogues = [json.loads(l)["dialogue"] for l in open(data, encoding="utf-8")]
lock = threading.Lock()
next_i = [0]
lat, errors, results = [], [], {}


def client():
    while True:
        with lock:
            i = next_i[0]
            if i >= total:
                return
            next_i[0] += 1
        body = json.dumps({"inputs": dialogues[i % len(dialogues)]})
        t = time.perf_counter()
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
            c.request("POST", "/", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            payload = r.read()
            c.close()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {payload[:200]!r}")
            text = json.loads(payload)[0]["summary_text"]
            with lock:
                lat.append(time.perf_counter() - t)
                results[i] = text
        except Exception as e:  # counted, not raised: the bench reports failures
            with lock:
                errors.append(f"{i}: {e}")


start = time.perf_counter()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - start
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
rep = {"clients": clients, "requests": total, "ok": len(lat), "errors": len(errors), "wall_s": wall,
       "req_per_s": len(lat) / wall, "p50_s": pct(0.5), "p95_s": pct(0.95), "first_errors": errors[:3]}
json.dump({"report": rep, "summaries": results}, open(out, "w"))
print(json.dumps(rep))
