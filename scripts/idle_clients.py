#!/usr/bin/env python3
"""Memory probes of a pooler, driven by scripts/bench-idle-memory.sh (stdlib only).

  idle_clients.py idle     --pid PID --port P --clients N   # RSS per idle logged-in client
  idle_clients.py registry --pid PID --port P --texts N     # RSS after N distinct statements

User, database and password come from PGUSER, PGDATABASE and PGPASSWORD (never the command
line). Each client speaks the wire protocol itself (startup, cleartext/MD5/SCRAM-SHA-256
authentication, a simple query), so the probe costs a few KiB per connection on this side and
nothing is hidden by a driver's pool. Prints `key value` lines; no asserts on the figures.
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


async def read_msg(reader):
    head = await reader.readexactly(5)
    n = struct.unpack("!i", head[1:])[0]
    return head[:1], await reader.readexactly(n - 4)


def cstr(s):
    return s.encode() + b"\0"


async def login(host, port, user, db, password):
    reader, writer = await asyncio.open_connection(host, port)
    body = struct.pack("!i", 196608) + cstr("user") + cstr(user) + cstr("database") + cstr(db) + b"\0"
    writer.write(struct.pack("!i", len(body) + 4) + body)
    scram = None
    while True:
        tag, body = await read_msg(reader)
        if tag == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code == 0:
                continue
            if code == 3:
                writer.write(msg(b"p", cstr(password)))
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                writer.write(msg(b"p", cstr("md5" + outer)))
            elif code == 10:
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = f"n=,r={nonce}"
                first = ("n,," + first_bare).encode()
                writer.write(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
                scram = (nonce, first_bare)
            elif code == 11:
                nonce, first_bare = scram
                server_first = body[4:].decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", "sha256").digest()
                stored = hashlib.sha256(client_key).digest()
                final_bare = f"c=biws,r={attrs['r']}"
                auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
                sig = hmac.new(stored, auth_msg, "sha256").digest()
                proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
                writer.write(msg(b"p", f"{final_bare},p={proof}".encode()))
            elif code == 12:
                continue
            else:
                raise RuntimeError(f"authentication request {code} not supported")
        elif tag == b"E":
            raise RuntimeError(f"login refused: {body!r}")
        elif tag == b"Z":
            return reader, writer


async def simple_query(reader, writer, sql):
    writer.write(msg(b"Q", cstr(sql)))
    while True:
        tag, body = await read_msg(reader)
        if tag == b"E":
            raise RuntimeError(f"query failed: {body!r}")
        if tag == b"Z":
            return


def env():
    return (os.environ["PGUSER"], os.environ["PGDATABASE"], os.environ["PGPASSWORD"])


async def idle(args):
    user, db, pw = env()
    start = rss_kib(args.pid)
    conns = []
    sem = asyncio.Semaphore(args.concurrency)

    async def one():
        async with sem:
            r, w = await login(args.host, args.port, user, db, pw)
            # One transaction first: the idle client is one that has run queries, as in an
            # application's pool, not one that only logged in.
            await simple_query(r, w, "SELECT 1")
            conns.append((r, w))

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.clients)))
    opened = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    held = rss_kib(args.pid)
    for r, w in conns:
        w.write(msg(b"X"))
        w.close()
    for r, w in conns:
        try:
            await w.wait_closed()
        except OSError:
            pass
    conns.clear()
    await asyncio.sleep(args.settle)
    after = rss_kib(args.pid)
    print(f"clients {args.clients}")
    print(f"open_seconds {opened:.1f}")
    print(f"rss_start_kib {start}")
    print(f"rss_idle_kib {held}")
    print(f"rss_after_kib {after}")
    print(f"kib_per_idle_client {(held - start) / args.clients:.2f}")


async def registry(args):
    user, db, pw = env()
    r, w = await login(args.host, args.port, user, db, pw)
    await simple_query(r, w, "SELECT 1")
    start = rss_kib(args.pid)
    batch = 100
    done = 0
    t0 = time.monotonic()
    while done < args.texts:
        n = min(batch, args.texts - done)
        out = bytearray()
        for i in range(done, done + n):
            text = f"SELECT $1::int + {i} AS distinct_text_{i}"
            out += msg(b"P", cstr("s") + cstr(text) + struct.pack("!h", 0))
            out += msg(b"B", cstr("") + cstr("s") + struct.pack("!hhi", 0, 1, 1) + b"7" + struct.pack("!h", 0))
            out += msg(b"E", cstr("") + struct.pack("!i", 0))
            out += msg(b"C", b"S" + cstr("s"))
            out += msg(b"S")
        w.write(bytes(out))
        seen = 0
        while seen < n:
            tag, body = await read_msg(r)
            if tag == b"E":
                raise RuntimeError(f"statement failed: {body!r}")
            if tag == b"Z":
                seen += 1
        done += n
    elapsed = time.monotonic() - t0
    end = rss_kib(args.pid)
    w.write(msg(b"X"))
    w.close()
    await asyncio.sleep(args.settle)
    after = rss_kib(args.pid)
    print(f"texts {args.texts}")
    print(f"seconds {elapsed:.1f}")
    print(f"rss_start_kib {start}")
    print(f"rss_end_kib {end}")
    print(f"rss_after_kib {after}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["idle", "registry"])
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--texts", type=int, default=100000)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--settle", type=float, default=3.0)
    args = p.parse_args()
    asyncio.run(idle(args) if args.what == "idle" else registry(args))


if __name__ == "__main__":
    sys.exit(main())
