"""Tests for download_bucket.py against a real S3-protocol server (moto's ThreadedMotoServer).

The server runs on 127.0.0.1 at a free port for the whole module; each test gets its own bucket.
Key naming and the manifest live in _download_paths.py (tested here too, as `dp`).
The CLI is run as a subprocess with a fresh environment (R2_* variables only, HOME and cwd in
tmp_path), so no AWS/R2 variable leaks into other tests; run() is used in-process where a fault
has to be injected deterministically (a client wrapper whose body stream breaks mid-transfer).
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

import _download_paths as dp
import download_bucket as db
from data_ingestion import PRICE_FILE_GLOB

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "download_bucket.py"
KEY_ID = "AKIDTESTKEY0000000042"
SECRET = "sEcReT-value-never-print-9f8e7d"


def price_file(address: str, start: int, pad: int = 0) -> bytes:
    """A small seed-format price file (pad: extra events to make it larger)."""
    events = [{"type": "price_change", "t": start * 1000 + i, "best_bid": 0.49, "best_ask": 0.51}
              for i in range(1 + pad)]
    return orjson.dumps({"slug": f"btc-updown-15m-{start}", "address": address, "prices": events})


def key_of(address: str, start: int, prefix: str = "merged_trades/") -> str:
    return f"{prefix}{address}/btc-updown-15m-{start}_prices.json"


@pytest.fixture(scope="module")
def server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    yield f"http://127.0.0.1:{port}"
    srv.stop()


@pytest.fixture
def s3(server):
    return boto3.client("s3", endpoint_url=server, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(max_pool_connections=16))


@pytest.fixture
def bucket(s3, request):
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50] + "-bkt"
    s3.create_bucket(Bucket=name)
    return name


def cli(tmp_path: Path, server: str, bucket: str | None, *args: str, extra: dict | None = None):
    """Run the real CLI in a subprocess with only R2_* variables set; returns CompletedProcess."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONHASHSEED": "0"}
    if server:
        env.update(R2_ENDPOINT_URL=server, R2_ACCESS_KEY_ID=KEY_ID, R2_SECRET_ACCESS_KEY=SECRET)
    if bucket:
        env["R2_BUCKET"] = bucket
    env.update(extra or {})
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert SECRET not in proc.stdout + proc.stderr
    assert KEY_ID not in proc.stdout + proc.stderr
    return proc


def counts(stdout: str) -> dict:
    """Parse the summary line: {'new': n, 'updated': n, 'skipped': n, 'failed': n, 'refused': n}."""
    return {k: int(v) for v, k in re.findall(r"(\d+) (new|updated|skipped|failed|refused)", stdout)}


def extra_counts(stdout: str) -> dict:
    """The summary line's {'unstorable': n, 'renamed': n} ("n under shortened names")."""
    return {k.split()[0].replace("under", "renamed"): int(v)
            for v, k in re.findall(r"(\d+) (unstorable|under shortened names)", stdout)}


def config(tmp_path: Path, server: str, bucket: str, **kw) -> db.SyncConfig:
    base = dict(endpoint_url=server, access_key_id=KEY_ID, secret_access_key=SECRET, bucket=bucket,
                prefix="merged_trades/", dest=str(tmp_path / "downloads" / "merged_trades"),
                env_file=str(tmp_path / "no.env"), backoff=0.001)
    return db.SyncConfig(**{**base, **kw})


def key_hash(key: str) -> str:
    """The sha256 prefix a shortened name carries."""
    return hashlib.sha256(key.encode()).hexdigest()[:dp.HASH_CHARS]


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("key,status", [
    ("merged_trades/0xab/btc-updown-15m-1768904100_prices.json", "ok"),
    ("merged_trades/0xab/eth-updown-15m-1768904100_prices.json", "off_layout"),
    ("merged_trades/0xab/deep/btc-updown-15m-1_prices.json", "off_layout"),
    ("merged_trades/README.txt", "off_layout"),
    ("merged_trades/0xab/", "dir"),
    ("merged_trades/../evil_prices.json", "refused"),
    ("merged_trades/a/..\\..\\x_prices.json", "refused"),
    ("merged_trades//etc/x", "refused"),
    ("merged_trades/a/\x00_prices.json", "refused"),
    ("merged_trades/./a/btc-x_prices.json", "refused"),
    ("merged_trades/C:/btc-x_prices.json", "refused"),
])
def test_classify_key(key, status):
    assert dp.classify_key(key, "merged_trades/")[0] == status


def test_safe_target_and_plain_md5(tmp_path):
    root = tmp_path.resolve()
    assert dp.safe_target(root, "a/b.json") == root / "a" / "b.json"
    assert dp.safe_target(root, "../x") is None
    assert db.plain_md5('"9e107d9d372bb6826bd81d3542a419d6"') == "9e107d9d372bb6826bd81d3542a419d6"
    assert db.plain_md5('"9e107d9d372bb6826bd81d3542a419d6-3"') is None


def test_resolve_config_precedence(tmp_path, monkeypatch):
    for var in db.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("R2_ACCOUNT_ID=acct123\nR2_ACCESS_KEY_ID=fromfile\nR2_SECRET_ACCESS_KEY=s\n"
                        "R2_BUCKET=filebucket\nR2_ENDPOINT_URL=\n")
    cfg = db.resolve_config(db.SyncConfig(env_file=str(env_file), bucket="flagbucket"),
                            environ={"R2_ACCESS_KEY_ID": "fromenv", "R2_PREFIX": "other"})
    assert cfg.endpoint_url == "https://acct123.r2.cloudflarestorage.com"
    assert (cfg.access_key_id, cfg.bucket, cfg.prefix) == ("fromenv", "flagbucket", "other/")
    assert "R2_BUCKET" not in os.environ  # dotenv values never leak into the process environment
    with pytest.raises(db.SyncError, match=r"R2_ENDPOINT_URL.*R2_ACCESS_KEY_ID.*R2_BUCKET.*\.env\.example"):
        db.resolve_config(db.SyncConfig(env_file=str(tmp_path / "none")), environ={})
    with pytest.raises(db.SyncError, match="address"):
        db.resolve_config(db.SyncConfig(env_file=str(env_file), address=("../x",)), environ={})


# ----------------------------------------------------------------------------- CLI end to end
def test_sync_then_noop_then_changed_object(tmp_path, server, s3, bucket):
    bodies = {key_of("0xaa", 1768904100): price_file("0xaa", 1768904100),
              key_of("0xaa", 1768905000): price_file("0xaa", 1768905000, pad=50),
              key_of("0xbb", 1768904100): price_file("0xbb", 1768904100)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="merged_trades/0xaa/eth-updown-15m-1_prices.json", Body=b"{}")
    dest = tmp_path / "downloads" / "merged_trades"

    first = cli(tmp_path, server, bucket)
    assert first.returncode == 0, first.stderr
    assert counts(first.stdout) == {"new": 3, "updated": 0, "skipped": 0, "failed": 0, "refused": 0}
    assert "eth-updown-15m-1_prices.json" in first.stderr  # off-layout key reported
    for key, body in bodies.items():
        assert (dest / key.removeprefix("merged_trades/")).read_bytes() == body
    assert tree(dest) == {k.removeprefix("merged_trades/") for k in bodies} | {".sync_manifest.json"}
    inode = {p: (dest / p).stat().st_ino for p in tree(dest)}

    second = cli(tmp_path, server, bucket)
    assert second.returncode == 0
    assert counts(second.stdout) == {"new": 0, "updated": 0, "skipped": 3, "failed": 0, "refused": 0}
    assert {p: (dest / p).stat().st_ino for p in tree(dest)} == inode  # nothing rewritten

    changed = key_of("0xaa", 1768904100)
    new_body = bodies[changed].replace(b"0.49", b"0.48")  # same size: only the ETag tells
    assert len(new_body) == len(bodies[changed]) and new_body != bodies[changed]
    s3.put_object(Bucket=bucket, Key=changed, Body=new_body)
    third = cli(tmp_path, server, bucket)
    assert counts(third.stdout) == {"new": 0, "updated": 1, "skipped": 2, "failed": 0, "refused": 0}
    assert (dest / changed.removeprefix("merged_trades/")).read_bytes() == new_body
    manifest = orjson.loads((dest / ".sync_manifest.json").read_bytes())["files"]
    assert manifest[changed]["etag"] == s3.head_object(Bucket=bucket, Key=changed)["ETag"]


def test_dry_run_writes_nothing(tmp_path, server, s3, bucket):
    for start in (1, 2):
        s3.put_object(Bucket=bucket, Key=key_of("0xaa", start), Body=price_file("0xaa", start))
    dry = cli(tmp_path, server, bucket, "--dry-run")
    assert dry.returncode == 0
    assert counts(dry.stdout)["new"] == 2 and "would download (new)" in dry.stdout
    assert not (tmp_path / "downloads").exists()

    assert cli(tmp_path, server, bucket).returncode == 0
    dest = tmp_path / "downloads" / "merged_trades"
    before = {p: (dest / p).read_bytes() for p in tree(dest)}
    s3.put_object(Bucket=bucket, Key=key_of("0xaa", 2), Body=price_file("0xaa", 2, pad=3))
    s3.put_object(Bucket=bucket, Key=key_of("0xcc", 3), Body=price_file("0xcc", 3))
    dry = cli(tmp_path, server, bucket, "--dry_run")
    assert counts(dry.stdout) == {"new": 1, "updated": 1, "skipped": 1, "failed": 0, "refused": 0}
    assert key_of("0xaa", 2) in dry.stdout and key_of("0xcc", 3) in dry.stdout
    assert {p: (dest / p).read_bytes() for p in tree(dest)} == before


def test_address_filter(tmp_path, server, s3, bucket):
    for address in ("0xaa", "0xbb", "0xcc"):
        s3.put_object(Bucket=bucket, Key=key_of(address, 1), Body=price_file(address, 1))
    proc = cli(tmp_path, server, bucket, "--address", "0xaa,0xcc", "--dest", "out")
    assert proc.returncode == 0
    assert tree(tmp_path / "out") == {"0xaa/btc-updown-15m-1_prices.json",
                                      "0xcc/btc-updown-15m-1_prices.json", ".sync_manifest.json"}
    proc = cli(tmp_path, server, bucket, "--address", "0xbb", "--address", "0xaa", "--dest", "out")
    assert counts(proc.stdout) == {"new": 1, "updated": 0, "skipped": 1, "failed": 0, "refused": 0}


def test_malicious_keys_write_nothing_outside_dest(tmp_path, server, s3, bucket):
    evil = ["merged_trades/../evil_prices.json", "merged_trades/a/..\\..\\x_prices.json",
            "merged_trades//etc/x_prices.json", "merged_trades/a/\x00_prices.json",
            "merged_trades/0xlink/btc-updown-15m-1_prices.json"]
    for key in evil + ["/etc/x"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"evil": true}')
    good = key_of("0xgood", 7)
    s3.put_object(Bucket=bucket, Key=good, Body=price_file("0xgood", 7))
    dest = tmp_path / "box" / "dest"
    (tmp_path / "outside").mkdir()
    dest.mkdir(parents=True)
    (dest / "0xlink").symlink_to(tmp_path / "outside", target_is_directory=True)  # escape by link
    before = tree(tmp_path)

    proc = cli(tmp_path, server, bucket, "--dest", "box/dest")
    assert proc.returncode == 0, proc.stderr
    assert counts(proc.stdout) == {"new": 1, "updated": 0, "skipped": 0, "failed": 0, "refused": 5}
    for key in evil:
        assert repr(key) in proc.stderr
    assert tree(tmp_path) - before == {"box/dest/.sync_manifest.json",
                                       "box/dest/0xgood/btc-updown-15m-7_prices.json"}

    root = cli(tmp_path, server, bucket, "--dest", "box/dest", "--prefix", "")
    assert root.returncode == 0 and "'/etc/x'" in root.stderr
    assert counts(root.stdout)["refused"] == 5 and counts(root.stdout)["new"] == 0
    assert tree(tmp_path) - before == {"box/dest/.sync_manifest.json",
                                       "box/dest/0xgood/btc-updown-15m-7_prices.json"}


def bulk_put(s3, bucket: str, items: dict[str, bytes]) -> None:
    """Store many objects in the server. Straight into moto's in-process backend when it is
    reachable (1,000+ HTTP PUTs from this process cost ~8 s of CPU); else over HTTP in threads.
    The sync under test lists and fetches them over HTTP either way."""
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key, body in items.items():
            backend.put_object(bucket, key, body)
    except (ImportError, KeyError, AttributeError, TypeError):
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))
    assert s3.head_object(Bucket=bucket, Key=next(iter(items)))["ContentLength"] > 0


def test_more_than_1000_objects_across_pages(tmp_path, server, s3, bucket):
    keys = [key_of(f"0x{i % 7:02x}", 1768000000 + 900 * i) for i in range(1050)]
    bulk_put(s3, bucket, {k: k.encode() for k in keys})
    first = cli(tmp_path, server, bucket, "--workers", "8")
    assert first.returncode == 0, first.stderr
    assert counts(first.stdout) == {"new": 1050, "updated": 0, "skipped": 0, "failed": 0, "refused": 0}
    assert int(re.search(r"1050 listed in (\d+) pages", first.stdout).group(1)) >= 2
    dest = tmp_path / "downloads" / "merged_trades"
    assert tree(dest) == {k.removeprefix("merged_trades/") for k in keys} | {".sync_manifest.json"}
    assert all((dest / k.removeprefix("merged_trades/")).read_bytes() == k.encode() for k in keys[::50])

    s3.put_object(Bucket=bucket, Key=key_of("0xff", 5), Body=b"one more")
    summary = db.run(config(tmp_path, server, bucket))
    assert summary["pages"] >= 2 and summary["listed"] == 1051
    assert (summary["new"], summary["updated"], summary["skipped"], summary["failed"]) == (1, 0, 1050, 0)


def test_bad_credentials_and_missing_bucket_exit_2(tmp_path, server, s3, bucket):
    s3.put_object(Bucket=bucket, Key=key_of("0xaa", 1), Body=b"x")
    missing = cli(tmp_path, server, "no-such-bucket-here")
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "no-such-bucket-here" in missing.stderr
    assert "Traceback" not in missing.stderr

    def set_auth(count: str) -> None:  # moto checks access keys once its no-auth budget is spent
        req = urllib.request.Request(f"{server}/moto-api/reset-auth", data=count.encode(),
                                     method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    set_auth("0")
    try:
        bad = cli(tmp_path, server, bucket)
    finally:
        set_auth("inf")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "credentials rejected" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "downloads").exists()


def test_missing_configuration_and_env_file(tmp_path, server, s3, bucket):
    s3.put_object(Bucket=bucket, Key=key_of("0xaa", 1), Body=b"x")
    none = cli(tmp_path, "", None)
    assert none.returncode == 2 and len(none.stderr.strip().splitlines()) == 1
    for var in ("R2_ENDPOINT_URL", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET", ".env.example"):
        assert var in none.stderr

    (tmp_path / ".env").write_text(f"R2_ENDPOINT_URL={server}\nR2_ACCESS_KEY_ID={KEY_ID}\n"
                                   f"R2_SECRET_ACCESS_KEY={SECRET}\nR2_BUCKET=wrong-bucket-name\n")
    wrong = cli(tmp_path, "", None)
    assert wrong.returncode == 2 and "wrong-bucket-name" in wrong.stderr
    flag = cli(tmp_path, "", None, "--bucket", bucket)  # the flag beats .env (env > .env: unit test)
    assert flag.returncode == 0 and counts(flag.stdout)["new"] == 1


# ----------------------------------------------------------------------------- interruption
class BrokenBody:
    """Stream wrapper that yields 10 chunks, records the partial file's size, then breaks."""

    def __init__(self, body, folder: Path, seen: list):
        self.body, self.folder, self.seen = body, folder, seen

    def iter_chunks(self, size):
        for i, chunk in enumerate(self.body.iter_chunks(size)):
            if i == 10:  # the consumer has written 10 chunks (>= 8 KiB left its write buffer)
                self.seen.append(sum(p.stat().st_size for p in self.folder.glob(".*.part")))
                raise ConnectionResetError("connection reset by peer (injected)")
            yield chunk


class CountingClient:
    """boto3 client wrapper: records get_object keys; breaks `fail` transfers of `fail_key`."""

    def __init__(self, real, dest: Path, fail_key: str = "", fail: int = 0):
        self.real, self.dest, self.fail_key, self.fail = real, dest, fail_key, fail
        self.calls, self.partial = [], []

    def get_paginator(self, name):
        return self.real.get_paginator(name)

    def get_object(self, **kw):
        self.calls.append(kw["Key"])
        resp = self.real.get_object(**kw)
        if kw["Key"] == self.fail_key and self.fail > 0:
            self.fail -= 1
            folder = self.dest / kw["Key"].removeprefix("merged_trades/").rsplit("/", 1)[0]
            resp["Body"] = BrokenBody(resp["Body"], folder, self.partial)
        return resp


def test_interrupted_transfer_leaves_no_partial_and_resumes(tmp_path, server, s3, bucket, monkeypatch):
    monkeypatch.setattr(db, "CHUNK", 1024)  # several chunks per file
    keys = [key_of("0xaa", s) for s in (1, 2, 3)] + [key_of("0xbb", 4)]
    big = keys[1]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=price_file("0xaa", 9, pad=200 if key == big else 0))
    cfg = config(tmp_path, server, bucket, retries=0, workers=2)
    dest = Path(cfg.dest)
    target = dest / big.removeprefix("merged_trades/")
    real = db.make_client(db.resolve_config(cfg))

    flaky = CountingClient(real, dest, fail_key=big, fail=1)
    monkeypatch.setattr(db, "make_client", lambda _cfg: flaky)
    argv = ["--endpoint_url", server, "--access_key_id", KEY_ID, "--secret_access_key", SECRET,
            "--bucket", bucket, "--prefix", "merged_trades/", "--dest", cfg.dest,
            "--env_file", cfg.env_file, "--retries", "0"]
    assert db.main(argv) == 1  # a failed file -> non-zero exit
    assert flaky.partial and flaky.partial[0] >= 1024  # bytes were on disk mid-stream ...
    assert not target.exists() and not list(dest.rglob("*.part"))  # ... and are gone now
    manifest = orjson.loads((dest / ".sync_manifest.json").read_bytes())["files"]
    assert set(manifest) == set(keys) - {big}

    (target.parent / f".{target.name}.stale123.part").write_bytes(b"left by a killed run")
    resume = CountingClient(real, dest)
    summary = db.run(cfg, client=resume)
    assert resume.calls == [big]  # finished files are not fetched again
    assert (summary["new"], summary["skipped"], summary["failed"]) == (1, 3, 0)
    assert target.read_bytes() == s3.get_object(Bucket=bucket, Key=big)["Body"].read()
    assert not list(dest.rglob("*.part"))

    (dest / ".sync_manifest.json").unlink()  # a crash before the manifest flush
    adopt = CountingClient(real, dest)
    summary = db.run(cfg, client=adopt)
    assert adopt.calls == [] and summary["skipped"] == 4
    assert set(orjson.loads((dest / ".sync_manifest.json").read_bytes())["files"]) == set(keys)


def test_transient_error_is_retried(tmp_path, server, s3, bucket, monkeypatch):
    monkeypatch.setattr(db, "CHUNK", 256)
    key = key_of("0xaa", 1)
    body = price_file("0xaa", 1, pad=80)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    cfg = config(tmp_path, server, bucket, retries=2)
    flaky = CountingClient(db.make_client(db.resolve_config(cfg)), Path(cfg.dest), key, fail=1)
    summary = db.run(cfg, client=flaky)
    assert (summary["new"], summary["failed"]) == (1, 0) and flaky.calls == [key, key]
    assert (Path(cfg.dest) / key.removeprefix("merged_trades/")).read_bytes() == body


def test_unreachable_endpoint_is_a_user_error(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="auto", aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(db.SyncError, match=f"cannot reach {endpoint}") as err:
        db.run(config(tmp_path, endpoint, "any-bucket"), client=client)
    assert SECRET not in str(err.value) and not (tmp_path / "downloads").exists()


# ----------------------------------------------------------------------------- file names, endpoints, help
LIMITS = (255, 4096)  # Linux NAME_MAX / PATH_MAX, so the pure tests do not depend on the host


@pytest.mark.parametrize("name_len,limits,how", [
    (40, LIMITS, "own"),
    (255 - dp.TEMP_EXTRA, LIMITS, "own"),  # its temp file is exactly NAME_MAX
    (255 - dp.TEMP_EXTRA + 1, LIMITS, "short"),  # the temp file would not fit
    (300, LIMITS, "short"),
    (180, (255, 200), "short"),  # the path (13 + 6 + 180 + 15 bytes) would pass PATH_MAX
    (120, (255, 60), "path_too_long"),  # not even btc-<hash>_prices.json fits
])
def test_storage_rel_fits_the_file_system(tmp_path, name_len, limits, how):
    root = Path("/d") / ("x" * 10)  # 13 bytes
    name = "btc-updown-15m-" + "9" * (name_len - 15 - len("_prices.json")) + "_prices.json"
    assert len(name) == name_len
    key = f"merged_trades/0xaa/{name}"
    stored, got = dp.storage_rel(f"0xaa/{name}", key, root, limits)
    assert got == how
    if how == "path_too_long":
        assert stored is None
        return
    assert dp.LAYOUT_RE.fullmatch(stored) and stored.startswith("0xaa/")
    file = stored.split("/")[1]
    assert fnmatch.fnmatchcase(file, PRICE_FILE_GLOB)  # data_ingestion still reads it
    assert len(file) + dp.TEMP_EXTRA <= limits[0]
    assert len(os.fsencode(root / stored)) + dp.TEMP_EXTRA < limits[1]
    if how == "own":
        assert file == name
    else:
        assert file.startswith("btc-") and key_hash(key) in file


def test_short_names_tell_keys_apart_and_address_is_never_renamed():
    stem = "btc-updown-15m-" + "7" * 400
    a, b = (f"merged_trades/0xaa/{stem}{tail}_prices.json" for tail in ("1", "2"))
    ra, _ = dp.storage_rel(a.removeprefix("merged_trades/"), a, Path("/d"), LIMITS)
    rb, _ = dp.storage_rel(b.removeprefix("merged_trades/"), b, Path("/d"), LIMITS)
    assert ra != rb and ra[:-40] == rb[:-40]  # same head, different hash
    assert dp.short_name("btc-x_prices.json", a, 0) == f"btc-{key_hash(a)}_prices.json"
    long_address = "0x" + "a" * 300
    assert dp.storage_rel(f"{long_address}/btc-1_prices.json", "k", Path("/d"), LIMITS) == (
        None, "address_too_long")
    # a manifest path is used only inside the key's own address folder, on the layout
    assert dp.recorded_rel({"path": "0xaa/btc-1-abc_prices.json"}, "0xaa/btc-1_prices.json")
    for bad in ("0xbb/btc-1_prices.json", "0xaa/../0xbb/btc-1_prices.json", "0xaa/x.json", 7, None):
        assert dp.recorded_rel({"path": bad}, "0xaa/btc-1_prices.json") is None


def test_overlong_names_are_stored_short_and_never_block_later_runs(tmp_path, server, s3, bucket):
    """The old code failed such a key on every run, and once its folder existed every later run
    crashed (ENAMETOOLONG from the local check) before downloading anything."""
    long_name = "btc-updown-15m-" + "9" * 300 + "_prices.json"  # 327 bytes > NAME_MAX 255
    long_key = f"merged_trades/0xaa/{long_name}"
    long_address = "0x" + "b" * 300
    bodies = {long_key: price_file("0xaa", 9), key_of("0xaa", 1): price_file("0xaa", 1),
              key_of(long_address, 2): price_file(long_address, 2)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    dest = tmp_path / "downloads" / "merged_trades"

    first = cli(tmp_path, server, bucket)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert counts(first.stdout) == {"new": 2, "updated": 0, "skipped": 0, "failed": 0, "refused": 0}
    assert extra_counts(first.stdout) == {"unstorable": 1, "renamed": 1}
    assert "address_too_long" in first.stderr and long_address in first.stderr
    manifest = orjson.loads((dest / ".sync_manifest.json").read_bytes())["files"]
    stored = manifest[long_key]["path"]
    assert stored != long_key.removeprefix("merged_trades/") and stored.startswith("0xaa/btc-updown-15m-9")
    assert fnmatch.fnmatchcase(stored.split("/")[1], PRICE_FILE_GLOB)
    assert (dest / stored).read_bytes() == bodies[long_key]
    assert tree(dest) == {stored, "0xaa/btc-updown-15m-1_prices.json", ".sync_manifest.json"}

    for _ in range(2):  # the folder exists now: later runs skip both files, no crash
        again = cli(tmp_path, server, bucket)
        assert again.returncode == 0, again.stderr
        assert "Traceback" not in again.stderr
        assert counts(again.stdout) == {"new": 0, "updated": 0, "skipped": 2, "failed": 0, "refused": 0}
        assert extra_counts(again.stdout)["unstorable"] == 1

    s3.put_object(Bucket=bucket, Key=long_key, Body=price_file("0xaa", 9, pad=2))  # changed
    changed = cli(tmp_path, server, bucket)
    assert counts(changed.stdout)["updated"] == 1 and changed.returncode == 0
    assert (dest / stored).read_bytes() == price_file("0xaa", 9, pad=2)
    assert tree(dest) == {stored, "0xaa/btc-updown-15m-1_prices.json", ".sync_manifest.json"}


def test_a_name_the_file_system_refuses_falls_back_to_the_hash_name(tmp_path, server, s3, bucket,
                                                                     monkeypatch):
    key = key_of("0xaa", 5)
    s3.put_object(Bucket=bucket, Key=key, Body=price_file("0xaa", 5))
    s3.put_object(Bucket=bucket, Key=key_of("0xaa", 6), Body=price_file("0xaa", 6))
    real_fetch = db.fetch_once

    def picky_fs(client, bkt, obj, target, progress):  # refuses the first key's own name
        if obj["key"] == key and target.name == "btc-updown-15m-5_prices.json":
            raise OSError(errno.EILSEQ, "Invalid or incomplete multibyte or wide character", str(target))
        return real_fetch(client, bkt, obj, target, progress)

    monkeypatch.setattr(db, "fetch_once", picky_fs)
    cfg = config(tmp_path, server, bucket, retries=0)
    summary = db.run(cfg)
    assert (summary["new"], summary["failed"]) == (2, 0)
    dest = Path(cfg.dest)
    safe = f"0xaa/btc-{key_hash(key)}_prices.json"
    assert (dest / safe).read_bytes() == price_file("0xaa", 5)
    assert orjson.loads((dest / ".sync_manifest.json").read_bytes())["files"][key]["path"] == safe

    counting = CountingClient(db.make_client(db.resolve_config(cfg)), dest)
    again = db.run(cfg, client=counting)  # the manifest maps the key to the safe name
    assert counting.calls == [] and (again["skipped"], again["failed"]) == (2, 0)


def test_a_local_check_that_fails_fails_one_key_only(tmp_path, server, s3, bucket, monkeypatch):
    keys = [key_of("0xaa", 1), key_of("0xaa", 2)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=price_file("0xaa", 1))
    cfg = config(tmp_path, server, bucket)
    broken = Path(cfg.dest) / keys[0].removeprefix("merged_trades/")
    broken.parent.mkdir(parents=True)
    broken.write_bytes(price_file("0xaa", 1))  # same size, no manifest: the check hashes it
    real_md5 = dp.file_md5

    def unreadable(path):
        if Path(path) == broken.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_md5(path)

    monkeypatch.setattr(dp, "file_md5", unreadable)
    summary = db.run(cfg)
    assert (summary["new"], summary["failed"], summary["failed_keys"]) == (1, 1, [keys[0]])


@pytest.mark.parametrize("where,value,named", [
    ("flag", "foo", "--endpoint_url"),
    ("flag", "ftp://127.0.0.1:9", "--endpoint_url"),
    ("env", "http://", "R2_ENDPOINT_URL"),
    ("env", "http://127.0.0.1:99999", "R2_ENDPOINT_URL"),
    ("dotenv", "localhost:9000", "R2_ENDPOINT_URL in .env"),
])
def test_bad_endpoint_is_one_line_and_exit_2(tmp_path, where, value, named):
    extra = {"R2_ACCESS_KEY_ID": KEY_ID, "R2_SECRET_ACCESS_KEY": SECRET, "R2_BUCKET": "b"}
    args = ()
    if where == "flag":
        args = ("--endpoint", value)  # argparse's unique-prefix form of --endpoint_url
    elif where == "env":
        extra["R2_ENDPOINT_URL"] = value
    else:
        (tmp_path / ".env").write_text(f"R2_ENDPOINT_URL={value}\n")
    proc = cli(tmp_path, "", None, *args, extra=extra)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert named in proc.stderr and repr(value) in proc.stderr and "http(s)://" in proc.stderr
    assert not (tmp_path / "downloads").exists()


def test_check_endpoint_accepts_real_urls():
    for url in ("https://abc123.r2.cloudflarestorage.com", "http://127.0.0.1:9000", "http://[::1]:9000/",
                "http://minio.local/prefix"):
        db.check_endpoint(url, "R2_ENDPOINT_URL")


def test_every_flag_has_help_with_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag in format_help
    parser = db.build_parser()
    flags = [a for a in parser._actions if a.option_strings != ["-h", "--help"]]
    assert {a.dest for a in flags} == {f.name for f in fields(db.SyncConfig)}  # 1:1
    for action in flags:
        assert action.help and "(default: " in action.help, action.option_strings
    text = parser.format_help()
    assert "(default: 8)" in text and "(default: downloads/merged_trades)" in text
    assert "(default: R2_BUCKET from the environment" in text
