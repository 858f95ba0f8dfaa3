"""Checks for compare_serve.sh against a running `twindex serve` (stdlib only).

    python3 serve_check.py acked HOST:PORT INDEX WRK_JSON...   every acknowledged add is there
    python3 serve_check.py malformed HOST:PORT INDEX N         N malformed requests of 20+ kinds:
                                                               all 4xx, and the server still answers
Prints one JSON object.
"""
import http.client
import json
import sys


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def call(c, method, path, body=None, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    return r.status, r.read()


def acked(addr, index, files):
    ids = []
    for f in files:
        ids += json.load(open(f))["acked_ids"]
    c = conn(addr)
    missing = []
    for i in ids:
        s, b = call(c, "POST", f"/v1/indexes/{index}/query", json.dumps({"id": int(i), "k": 1}))
        if s != 200 or json.loads(b)["results"][0]["id"] != int(i):
            missing.append(int(i))
    print(json.dumps({"acknowledged_adds": len(ids), "distinct": len(set(ids)), "missing": missing}))
    return not missing


def malformed(addr, index, n):
    q = f"/v1/indexes/{index}/query"
    kinds = [
        ("POST", q, b'{"text": "unterminated', {}),
        ("POST", q, b"", {}),
        ("POST", q, b"[1, 2, 3]", {}),
        ("POST", q, b"{}", {}),
        ("POST", q, b'{"text": "hi", "k": "ten"}', {}),
        ("POST", q, b'{"text": "hi", "k": 0}', {}),
        ("POST", q, b'{"text": "hi", "k": -1}', {}),
        ("POST", q, b'{"text": "hi", "ef": 0}', {}),
        ("POST", q, b'{"text": "hi", "threshold": "x"}', {}),
        ("POST", q, b'{"text": 42}', {}),
        ("POST", q, b'{"text": "   "}', {}),
        ("POST", q, b'{"text": "hi", "vector": [1]}', {}),
        ("POST", q, b'{"vector": [1, 2, 3]}', {}),
        ("POST", q, b'{"vector": "abc"}', {}),
        ("POST", q, b'{"image": "%%% not base64"}', {}),
        ("POST", q, b'{"image": "aGVsbG8gd29ybGQ="}', {}),
        ("POST", q, b'{"id": 999999999}', {}),
        ("POST", q, b'{"texts": "typo"}', {}),
        ("POST", q, b'{"queries": []}', {}),
        ("POST", q, b'{"queries": [{"text": "ok"}, {"text": ""}]}', {}),
        ("POST", q, b'{"text": "hi"}', {"Content-Type": "text/plain"}),
        ("POST", q, b'{"text": "' + b"a" * (9 << 20) + b'"}', {}),
        ("POST", "/v1/indexes/nope/query", b'{"text": "hi"}', {}),
        ("GET", q, None, {}),
        ("DELETE", f"/v1/indexes/{index}/items/xyz", None, {}),
        ("POST", f"/v1/indexes/{index}/items", b'{"id": 3}', {}),
        ("POST", f"/v1/indexes/{index}/verify", b'{"text": "hi"}', {}),
        ("POST", f"/v1/indexes/{index}/verify", b'{"text": "hi", "label": "x", "aggregate": "max"}', {}),
    ]
    statuses, bad = {}, []
    c = conn(addr)
    for i in range(n):
        m, p, b, h = kinds[i % len(kinds)]
        try:
            s, body = call(c, m, p, b, h)
        except (http.client.HTTPException, OSError):
            c = conn(addr)
            s, body = call(c, m, p, b, h)
        if s == 413:
            c = conn(addr)  # the server may close after refusing a large body
        statuses[s] = statuses.get(s, 0) + 1
        if not (400 <= s < 500) or "error" not in json.loads(body or b"{}"):
            bad.append([m, p, s, body[:200].decode("utf-8", "replace")])
    s, _ = call(conn(addr), "POST", q, json.dumps({"text": "How do I learn Python?", "k": 3}))
    out = {"sent": n, "kinds": len(kinds), "statuses": statuses, "not_4xx_json": bad, "still_serving": s == 200}
    print(json.dumps(out))
    return not bad and s == 200


if __name__ == "__main__":
    what, addr, index = sys.argv[1], sys.argv[2], sys.argv[3]
    ok = acked(addr, index, sys.argv[4:]) if what == "acked" else malformed(addr, index, int(sys.argv[4]))
    sys.exit(0 if ok else 1)
