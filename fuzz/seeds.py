#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target to fuzz/seeds/<target>/.

The seeds come from files already in the repository (role fixtures and
examples, the real SHA256SUMS and signatures of tests/data/hashicorp-release,
the agent API samples of tests/data/agent-api) and from a few inputs made
here (zips, an index.json, HTTP requests). scripts/fuzz.sh merges them into
the committed corpus (fuzz/corpus/<target>/, minimized with `cargo fuzz
cmin`); run this again after the sources change.
"""

import hashlib
import io
import json
import pathlib
import shutil
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def role_file():
    files = sorted((ROOT / "config").rglob("*.toml"))
    files += sorted((ROOT / "tests/fixtures/role").rglob("*.toml"))
    for f in files:
        put("role_file", f.relative_to(ROOT).as_posix().replace("/", "_"), f.read_bytes())


def release():
    rel = ROOT / "tests/data/hashicorp-release"
    sums = sorted(rel.glob("*_SHA256SUMS"))
    for f in sums:
        put("sha256sums", f.name, f.read_bytes())
        for sig in sorted(rel.glob(f.name + "*.sig")):
            put("openpgp_verify", sig.name, f.read_bytes() + b"\n--SIG--\n" + sig.read_bytes())
    put("sha256sums", "star-and-blank-lines", "\n" + "ab" * 32 + " *consul_1.21.4_linux_amd64.zip\n\n")
    # A key file as the signature bytes: read as trusted_keys.
    put("openpgp_verify", "key.asc", (rel / "hashicorp-release-key.asc").read_bytes())
    index = {"name": "consul", "versions": {}}
    for v in ["1.21.4", "1.21.0-rc1", "1.21.4+ent", "v1.9.0", "garbage", "1.20.1"]:
        vv = v.lstrip("v")
        index["versions"][v] = {
            "name": "consul",
            "version": vv,
            "shasums": f"consul_{vv}_SHA256SUMS",
            "shasums_signature": f"consul_{vv}_SHA256SUMS.sig",
            "shasums_signatures": [f"consul_{vv}_SHA256SUMS.72D7468F.sig"],
            "builds": [
                {"name": "consul", "version": vv, "os": "linux", "arch": a,
                 "filename": f"consul_{vv}_linux_{a}.zip",
                 "url": f"https://releases.hashicorp.com/consul/{vv}/consul_{vv}_linux_{a}.zip"}
                for a in ["amd64", "arm64"]
            ],
        }
    text = json.dumps(index)
    put("release_index", "index.json", text)
    for spec in ["1.21.4", ">=1.20, <1.21", "~1.21", "1.21.0-rc1"]:
        put("release_index", "spec-" + hashlib.sha1(spec.encode()).hexdigest()[:8], spec + "\n" + text)


def zips():
    def z(entries, method=zipfile.ZIP_DEFLATED):
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w", method) as w:
            for name, data, mode in entries:
                i = zipfile.ZipInfo(name)
                i.compress_type = method
                if mode is not None:
                    i.external_attr = mode << 16
                w.writestr(i, data)
        return b.getvalue()

    binary = b"\x7fELF" + bytes(range(256)) * 4
    put("release_zip", "release", z([("consul", binary, 0o100755), ("LICENSE.txt", b"MPL-2.0\n", 0o100644)]))
    put("release_zip", "stored", z([("consul", binary, 0o100755)], zipfile.ZIP_STORED))
    put("release_zip", "traversal", z([("../consul", binary, 0o100755)]))
    put("release_zip", "absolute", z([("/tmp/consul", binary, 0o100755)]))
    put("release_zip", "symlink", z([("consul", b"/etc/passwd", 0o120777)]))
    put("release_zip", "directory", z([("consul/", b"", 0o40755)]))
    put("release_zip", "twice", z([("consul", binary, None), ("consul", binary, None)]))
    put("release_zip", "bomb", z([("consul", bytes(4 << 20), 0o100755)]))
    put("release_zip", "many", z([(f"LICENSE-{i}.txt", b"", None) for i in range(20)]))


def agent_api():
    # The first byte picks the parser (crate::fuzzing::agent_api).
    which = {
        "consul/status_leader.json": 0, "consul/status_peers.json": 1,
        "consul/agent_members.json": 2, "consul/agent_self.json": 3,
        "consul/operator_autopilot_health.json": 4, "nomad/agent_health.json": 5,
        "nomad/agent_self.json": 6, "nomad/agent_members.json": 7, "nomad/nodes.json": 8,
        "nomad/agent_join.json": 9, "nomad/status_leader.json": 10,
        "nomad/operator_autopilot_health.json": 4,
    }
    api = ROOT / "tests/data/agent-api"
    for rel, n in which.items():
        put("agent_api", rel.replace("/", "_"), bytes([n]) + (api / rel).read_bytes())
    for d in ["1h2m3.5s", "150ms", "-1s", "99999999999999999999h", "1.5µs"]:
        put("agent_api", "duration-" + hashlib.sha1(d.encode()).hexdigest()[:8], bytes([11]) + d.encode())


def health_http():
    reqs = {
        "health": "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "status": "GET /v1/status HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n",
        "metrics": "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain;version=0.0.4\r\n\r\n",
        "page": "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n",
        "ready-verbose": "HEAD /ready?verbose HTTP/1.0\r\n\r\n",
        "pipelined": "GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "body": "POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "big-body": "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n",
        "chunked": "POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    }
    for name, r in reqs.items():
        put("health_http", name, r)


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    role_file()
    release()
    zips()
    agent_api()
    health_http()
    for d in sorted(OUT.iterdir()):
        n = len(list(d.iterdir()))
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d.name}: {n} seeds, {size} bytes")
