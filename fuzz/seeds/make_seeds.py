#!/usr/bin/env python3
"""Writes the generated seeds of two fuzz targets (the others' seeds are plain files):

- fuzz/corpus/fuzz_rls_proto/: RateLimitRequests serialized by `protoc --encode` from the text
  protos below;
- fuzz/corpus/fuzz_redis_reply/: the decide script's replies, as a real redis-server sends them,
  to calls shaped as sluice's DecideCall::build() shapes them (each algorithm, fresh and used
  keys, a denial, a batch, NOSCRIPT), each behind the target's first byte (where it splits its
  feeds).

Run from anywhere: python3 fuzz/seeds/make_seeds.py (needs protoc and redis-server).
"""
import os
import re
import socket
import struct
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

RLS = {
    "one_descriptor": 'domain: "edge_proxy" descriptors { entries { key: "remote_address" value: "203.0.113.9" } }',
    "nested_and_two": 'domain: "edge_proxy" descriptors { entries { key: "plan" value: "free" } '
                      'entries { key: "user_id" value: "alice" } } '
                      'descriptors { entries { key: "remote_address" value: "10.0.0.7" } } hits_addend: 3',
    "override_and_addend": 'domain: "edge_proxy" descriptors { entries { key: "api_key" value: "k1" } '
                           'limit { requests_per_unit: 7 unit: MINUTE } hits_addend { value: 0 } }',
    "wildcard_shadow": 'domain: "edge_proxy" descriptors { entries { key: "path" value: "/v1/users" } } '
                       'descriptors { entries { key: "path" value: "/search" } }',
    "tenant_two_limits": 'domain: "edge_proxy" descriptors { entries { key: "tenant" value: "t" } } hits_addend: 100',
    "unknown_domain": 'domain: "nope" descriptors { entries { key: "k" } }',
    "no_descriptors": 'domain: "edge_proxy"',
}


def rls_seeds():
    out = os.path.join(CORPUS, "fuzz_rls_proto")
    os.makedirs(out, exist_ok=True)
    proto = "envoy/service/ratelimit/v3/rls.proto"
    for name, text in RLS.items():
        data = subprocess.run(
            ["protoc", "--encode=envoy.service.ratelimit.v3.RateLimitRequest",
             "-I", os.path.join(ROOT, "proto"), proto],
            input=text.encode(), capture_output=True, check=True).stdout
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)


def decide_script():
    src = open(os.path.join(ROOT, "src/storage/redis/script.cc")).read()
    return re.search(r'R"lua\((.*)\)lua"', src, re.S).group(1)


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def call(script_or_sha, evalsha, requests, grace=1000):
    """One script call, as DecideCall::build() encodes it. requests: [(now, [(key, alg, n, w,
    burst, cost, enforce)])]."""
    keys = [h[0] for _, hits in requests for h in hits]
    args = []
    for now, hits in requests:
        vals = [now, len(hits)]
        for _, alg, n, w, burst, cost, enforce in hits:
            vals += [alg, n, w, burst, cost, enforce]
        args.append(struct.pack("<%dd" % len(vals), *vals))
    parts = [b"EVALSHA" if evalsha else b"EVAL", script_or_sha.encode(), str(len(keys)).encode()]
    parts += [k.encode() for k in keys] + [str(grace).encode()] + args
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)


def read_reply(sock):
    """Reads one whole RESP reply and returns its raw bytes."""
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("redis closed the connection")
        buf += chunk
        end = complete(buf, 0)
        if end is not None:
            return buf[:end]


def complete(buf, pos):
    """The end of the reply starting at pos, or None if it is not all there."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind, rest = buf[pos:pos + 1], buf[pos + 1:line_end]
    if kind in (b"+", b"-", b":"):
        return line_end + 2
    if kind == b"$":
        n = int(rest)
        end = line_end + 2 + max(n, 0) + (2 if n >= 0 else 0)
        return end if len(buf) >= end else None
    if kind == b"*":
        pos = line_end + 2
        for _ in range(max(int(rest), 0)):
            pos = complete(buf, pos)
            if pos is None:
                return None
        return pos
    raise RuntimeError("unexpected reply %r" % buf[pos:pos + 20])


def redis_seeds():
    out = os.path.join(CORPUS, "fuzz_redis_reply")
    os.makedirs(out, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        script = decide_script()
        t0 = 1_700_000_000_000_000
        second = 1_000_000
        fixed = ("{f}fixed", 0, 10, second, 0, 4, 1)
        log = ("{l}log", 1, 10, second, 0, 3, 1)
        counter = ("{c}counter", 2, 10, 60 * second, 0, 4, 1)
        bucket = ("{b}bucket", 3, 5, second, 20, 7, 1)
        calls = [
            ("fresh_fixed", False, [(t0, [fixed])]),
            ("used_fixed", False, [(t0 + 1, [fixed])]),
            ("denied_fixed", False, [(t0 + 2, [fixed, fixed[:5] + (9, 1)])]),
            ("fresh_log", False, [(t0, [log])]),
            ("used_log", False, [(t0 + 10, [log])]),
            ("three_log", False, [(t0 + 20, [log])]),
            ("fresh_counter", False, [(t0, [counter])]),
            ("next_window_counter", False, [(t0 + 61 * second, [counter])]),
            ("fresh_bucket", False, [(t0, [bucket])]),
            ("used_bucket", False, [(t0 + 1000, [bucket])]),
            ("denied_bucket", False, [(t0 + 2000, [bucket[:5] + (30, 1)])]),
            ("all_four", False, [(t0 + 3000, [fixed, log, counter, bucket])]),
            ("batch_of_two", False, [(t0 + 4000, [fixed]), (t0 + 4000, [bucket, log])]),
            ("redis_time", False, [(-1, [counter])]),
            ("noscript", True, [(t0, [fixed])]),
        ]
        replies = {}
        for name, evalsha, requests in calls:
            sock.sendall(call("0" * 40 if evalsha else script, evalsha, requests))
            replies[name] = read_reply(sock)
        # A key that is not a sliding log's msgpack: that request answers an error in its place.
        sock.sendall(b"*3\r\n" + bulk(b"SET") + bulk(b"{x}log") + bulk(b"\xc1garbage"))
        read_reply(sock)
        sock.sendall(call(script, False, [(t0, [fixed]), (t0, [("{x}log",) + log[1:]])]))
        replies["request_error_in_batch"] = read_reply(sock)
        # NOSCRIPT, then the reply to the EVAL that follows it.
        replies["noscript_then_eval"] = replies["noscript"] + replies["fresh_fixed"]
        for name, reply in replies.items():
            for split in (0, len(reply) // 2):
                suffix = "" if split == 0 else "_split"
                with open(os.path.join(out, name + suffix + ".resp"), "wb") as f:
                    f.write(bytes([min(split, 255)]) + reply)
        sock.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    rls_seeds()
    redis_seeds()
