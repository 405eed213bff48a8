"""Sync a trader-data bucket (Cloudflare R2 or any S3-protocol store) into downloads/merged_trades/.

Promise: each object {prefix}{address}/btc-*_prices.json lands byte for byte at
{dest}/{address}/btc-*_prices.json; only new or changed objects are fetched (size + ETag kept in
{dest}/.sync_manifest.json); a file appears only complete and verified (temp file beside it, size
and plain-MD5 ETag checked, os.replace); a rerun resumes an interrupted one without refetching
finished files; nothing is written outside dest. No market data is read or fitted here, so the
no-leakage rule has nothing to act on beyond copying the bucket faithfully.
Run alone: python download_bucket.py [--address 0xabc,0xdef] [--dry-run] [--workers 8]
(R2_* settings from .env / the environment, see .env.example; a flag overrides both).

Decisions where the issue is silent:
- .env never overrides the real environment and is read with dotenv_values (os.environ untouched);
  an empty value is unset. prefix/manifest default to None = "R2_PREFIX, else merged_trades/" and
  "{dest}/.sync_manifest.json"; a non-empty prefix gets a trailing "/".
- Additive sync: objects deleted from the bucket stay on disk. Keys that are not
  {address}/btc-*_prices.json are skipped and reported; folder markers ("x/") are ignored.
- A file with no manifest entry (crash before the flush) is adopted when size and MD5 match a
  plain-MD5 ETag; with a multipart ETag it is fetched again.
- Transient errors (5xx, throttling, timeouts, resets, size/MD5 mismatch) are retried with
  exponential backoff and per-key seeded jitter; others fail that file at once.
- File names (_download_paths.py, which also keeps the manifest): a key whose name the file
  system cannot store (over NAME_MAX / PATH_MAX, or refused) is stored under a shortened
  btc-..-<sha256 of the key>_prices.json name recorded in the manifest, so later runs skip it when
  unchanged; a key whose address folder cannot be stored is skipped as "unstorable" with its
  reason. A local check that fails (stat, hash) fails that key only; no key blocks a later run.
- The endpoint must be http(s)://host[:port]; anything else is a one-line error naming its source.
- Exit codes: 0 ok, 1 some files failed, 2 configuration / credentials / bucket, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import os
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from _download_paths import (
    NAME_ERRNOS,
    checked_state,
    load_manifest,
    place_keys,
    plain_md5,
    save_manifest,
    short_name,
)

__all__ = ["SyncConfig", "SyncError", "resolve_config", "check_endpoint", "run", "main"]

log = logging.getLogger("download_bucket")


@dataclass(frozen=True)
class SyncConfig:
    """Where to sync from and to; None fields are filled from the environment / .env."""

    endpoint_url: str | None = None
    """S3 endpoint, http(s)://host[:port]; without one: https://{account_id}.r2.cloudflarestorage.com."""
    account_id: str | None = None
    """Cloudflare account id, used only to build the endpoint URL."""
    access_key_id: str | None = None
    """Access key id; never printed."""
    secret_access_key: str | None = None
    """Secret access key; never printed. Prefer .env: a flag shows up in ps."""
    bucket: str | None = None
    """Bucket name."""
    prefix: str | None = None
    """Key prefix to sync; without R2_PREFIX: merged_trades/."""
    dest: str = "downloads/merged_trades"
    """Local folder; key {prefix}{address}/{file} lands at {dest}/{address}/{file}."""
    address: tuple[str, ...] = ()
    """Only these trader addresses (repeatable flag or comma list); empty: all."""
    workers: int = 8
    """Parallel downloads (threads; also the HTTP connection pool size)."""
    dry_run: bool = False
    """List what would be downloaded (new / updated) and write nothing."""
    retries: int = 4
    """Extra attempts per file on transient errors."""
    backoff: float = 0.5
    """First retry delay in seconds; doubles per attempt (x jitter in [0.5, 1.5), cap 30 s)."""
    seed: int = 0
    """Seed of the retry jitter (per key), so retry timing is reproducible."""
    manifest: str | None = None
    """Manifest path (key -> size, ETag, local path); None: {dest}/.sync_manifest.json."""
    env_file: str = ".env"
    """dotenv file read for the R2_* variables (a missing file: the environment only)."""


ENV_VARS = {"endpoint_url": "R2_ENDPOINT_URL", "account_id": "R2_ACCOUNT_ID",
            "access_key_id": "R2_ACCESS_KEY_ID", "secret_access_key": "R2_SECRET_ACCESS_KEY",
            "bucket": "R2_BUCKET", "prefix": "R2_PREFIX"}
DEFAULT_PREFIX = "merged_trades/"
MANIFEST_NAME = ".sync_manifest.json"
ADDRESS_RE = re.compile(r"[A-Za-z0-9_.-]+")
CHUNK = 1 << 20  # bytes per read from the response stream
FLUSH_EVERY_S = 2.0  # manifest flush period while downloading
HOST_RE = re.compile(r"[A-Za-z0-9._:-]+")  # a host name, IPv4 or (unbracketed) IPv6 address
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
              "ExpiredToken", "InvalidClientTokenId", "Unauthorized", "Forbidden", "401", "403"}
MISSING_BUCKET_CODES = {"NoSuchBucket", "404", "NotFound"}
TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                   "Throttling", "ThrottlingException", "TooManyRequests", "429"}


class SyncError(Exception):
    """A user-facing problem (configuration, credentials, bucket): one line, exit code 2."""


class IntegrityError(Exception):
    """A downloaded body whose size or MD5 does not match the listing (retried)."""


# ----------------------------------------------------------------------------- configuration
def resolve_config(cfg: SyncConfig, environ: dict | None = None) -> SyncConfig:
    """Fill None fields: flag > environment > cfg.env_file > default; os.environ is not touched.

    Raises SyncError naming every missing variable (and .env.example) or a bad value."""
    from dotenv import dotenv_values

    environ = dict(os.environ if environ is None else environ)
    file_vals = dotenv_values(cfg.env_file) if Path(cfg.env_file).is_file() else {}
    values = {name: getattr(cfg, name) if getattr(cfg, name) is not None
              else (environ.get(var) or file_vals.get(var) or None) for name, var in ENV_VARS.items()}
    source = ("--endpoint_url" if cfg.endpoint_url is not None else "R2_ENDPOINT_URL"
              if environ.get("R2_ENDPOINT_URL") else f"R2_ENDPOINT_URL in {cfg.env_file}")
    if not values["endpoint_url"] and values["account_id"]:
        values["endpoint_url"] = f"https://{values['account_id']}.r2.cloudflarestorage.com"
        source = "the endpoint built from R2_ACCOUNT_ID"
    missing = [] if values["endpoint_url"] else ["R2_ENDPOINT_URL (or R2_ACCOUNT_ID)"]
    missing += [ENV_VARS[n] for n in ("access_key_id", "secret_access_key", "bucket")
                if not values[n]]
    if missing:
        raise SyncError(f"missing configuration: {', '.join(missing)}; set them in {cfg.env_file} "
                        "(copy .env.example) or the environment, or pass the matching flags")
    check_endpoint(values["endpoint_url"], source)
    prefix = DEFAULT_PREFIX if values["prefix"] is None else values["prefix"]
    values["prefix"] = prefix + "/" if prefix and not prefix.endswith("/") else prefix
    addresses = tuple(a.strip() for item in cfg.address for a in item.split(",") if a.strip())
    for a in addresses:
        if not ADDRESS_RE.fullmatch(a) or a in (".", ".."):
            raise SyncError(f"--address {a!r} is not a valid address (letters, digits, _ . - only)")
    if cfg.workers < 1 or cfg.retries < 0 or cfg.backoff < 0:
        raise SyncError(f"need --workers >= 1, --retries >= 0, --backoff >= 0 (got {cfg.workers}, "
                        f"{cfg.retries}, {cfg.backoff})")
    return replace(cfg, address=addresses, **values)


def check_endpoint(url: str, source: str) -> None:
    """SyncError (one line naming source and value) unless url is http(s)://host[:port][/path]."""
    try:
        parts = urlsplit(url)
        ok = (parts.scheme in ("http", "https") and HOST_RE.fullmatch(parts.hostname or "")
              and (parts.port is None or parts.port > 0))
    except ValueError:  # a port that is not a number in 0..65535
        ok = False
    if not ok:
        raise SyncError(f"{source} {url!r} is not an endpoint URL: expected http(s)://host[:port], "
                        "e.g. https://ACCOUNT_ID.r2.cloudflarestorage.com")


def redact(text: str, cfg: SyncConfig) -> str:
    """Return text with the access key id and the secret replaced by '***'."""
    for secret in (cfg.secret_access_key, cfg.access_key_id):
        if secret:
            text = text.replace(secret, "***")
    return text


# ----------------------------------------------------------------------------- transfer
def make_client(cfg: SyncConfig):
    """A thread-safe boto3 S3 client for the resolved config (region auto, SigV4, path style)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=cfg.endpoint_url, region_name="auto",
        aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"mode": "standard", "max_attempts": 3},
                      max_pool_connections=cfg.workers, connect_timeout=10, read_timeout=60))


def error_code(exc: Exception) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError; ("", 0) for anything else."""
    response = getattr(exc, "response", None) or {}
    return (str(response.get("Error", {}).get("Code", "")),
            int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0))


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: 5xx/throttling, network and stream errors, bad bodies."""
    import botocore.exceptions as bx
    from urllib3.exceptions import HTTPError

    if isinstance(exc, IntegrityError | ConnectionError | TimeoutError | HTTPError):
        return True
    if isinstance(exc, bx.ClientError):
        code, status = error_code(exc)
        return code in TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(exc, bx.BotoCoreError) and not isinstance(
        exc, bx.NoCredentialsError | bx.ParamValidationError)


def list_objects(client, cfg: SyncConfig) -> tuple[list[dict], int]:
    """All objects under the prefix (or each prefix/address/) -> ([{"key", "size", "etag"}], pages).

    Raises SyncError (one line, secrets redacted) for bad credentials, a missing bucket, or an
    unreachable endpoint."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    prefixes = [f"{cfg.prefix}{a}/" for a in cfg.address] or [cfg.prefix]
    objects, pages = [], 0
    paginator = client.get_paginator("list_objects_v2")
    try:
        for prefix in prefixes:
            for page in paginator.paginate(Bucket=cfg.bucket, Prefix=prefix):
                pages += 1
                objects += [{"key": o["Key"], "size": int(o["Size"]), "etag": o.get("ETag", "")}
                            for o in page.get("Contents", [])]
    except ClientError as exc:
        code, status = error_code(exc)
        if code in AUTH_CODES or status in (401, 403):
            raise SyncError(f"credentials rejected by {cfg.endpoint_url} ({code or status}): check "
                            "R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY in .env") from None
        if code in MISSING_BUCKET_CODES:
            raise SyncError(f"bucket {cfg.bucket!r} not found at {cfg.endpoint_url}: check R2_BUCKET"
                            ) from None
        raise SyncError(f"listing s3://{cfg.bucket}/{cfg.prefix} failed: {redact(str(exc), cfg)}"
                        ) from None
    except EndpointConnectionError:
        raise SyncError(f"cannot reach {cfg.endpoint_url}: check R2_ENDPOINT_URL / R2_ACCOUNT_ID"
                        ) from None
    except BotoCoreError as exc:
        raise SyncError(f"listing failed: {redact(str(exc), cfg)}") from None
    return objects, pages


def fetch_once(client, bucket: str, obj: dict, target: Path, progress) -> None:
    """Download obj into a temp file beside target, check size (+ MD5), then os.replace it in.

    progress(n) gets each chunk's byte count. On any error the temp file is removed, so target is
    either the old file or the complete new one, never a partial one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    done, md5 = 0, hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as fh:
            body = client.get_object(Bucket=bucket, Key=obj["key"])["Body"]
            for chunk in body.iter_chunks(CHUNK):
                fh.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                progress(len(chunk))
        expected = plain_md5(obj["etag"])
        if done != obj["size"] or (expected is not None and md5.hexdigest() != expected):
            raise IntegrityError(f"{obj['key']}: got {done} B md5 {md5.hexdigest()}, listing says "
                                 f"{obj['size']} B etag {obj['etag']}")
        os.replace(tmp, target)
    except BaseException:
        progress(-done)  # the bar counts bytes kept, so a failed attempt gives its bytes back
        Path(tmp).unlink(missing_ok=True)
        raise


def download(client, cfg: SyncConfig, obj: dict, target: Path, progress) -> None:
    """fetch_once with up to cfg.retries retries on transient errors (seeded exponential backoff)."""
    rng = random.Random(f"{cfg.seed}:{obj['key']}")
    for attempt in range(cfg.retries + 1):
        try:
            return fetch_once(client, cfg.bucket, obj, target, progress)
        except Exception as exc:
            if attempt == cfg.retries or not is_transient(exc):
                raise
            delay = min(30.0, cfg.backoff * 2**attempt) * (0.5 + rng.random())
            log.debug("retry %d for %s in %.2fs: %s", attempt + 1, obj["key"], delay, redact(str(exc), cfg))
            time.sleep(delay)


def download_as(client, cfg: SyncConfig, obj: dict, target: Path, rel: str, progress) -> str:
    """download() into target (= dest/rel) -> the rel path the file was stored at. When the file
    system refuses the name (NAME_ERRNOS), once more as btc-<hash>_prices.json in its folder."""
    try:
        download(client, cfg, obj, target, progress)
        return rel
    except OSError as exc:
        address, name = rel.split("/")
        safe = short_name(name, obj["key"], 0)
        if exc.errno not in NAME_ERRNOS or safe == name:
            raise
        log.warning("%s: the file system refuses %r (%s); storing it as %s", obj["key"], name,
                    errno.errorcode.get(exc.errno, exc.errno), safe)
        download(client, cfg, obj, target.parent / safe, progress)
        return f"{address}/{safe}"


# ----------------------------------------------------------------------------- the stage
def run(cfg: SyncConfig, client=None) -> dict:
    """Sync the bucket into cfg.dest -> summary (counts, bytes, pages, key lists, planned).

    cfg is resolved here; client defaults to make_client(cfg). Raises SyncError for configuration /
    credential / bucket problems; per-file failures are counted, not raised."""
    cfg = resolve_config(cfg)
    try:
        client = client or make_client(cfg)
    except ValueError as exc:  # botocore's own endpoint check (check_endpoint should catch it first)
        raise SyncError(f"cannot use endpoint {cfg.endpoint_url!r}: {exc}") from None
    t0 = time.monotonic()
    objects, pages = list_objects(client, cfg)
    root = Path(cfg.dest).resolve()
    manifest_path = Path(cfg.manifest) if cfg.manifest else root / MANIFEST_NAME
    files = load_manifest(manifest_path)
    summary = {"new": 0, "updated": 0, "skipped": 0, "failed": 0, "bytes": 0, "pages": pages,
               "listed": len(objects), "failed_keys": [], "planned": []}
    todo, placed = place_keys(objects, cfg.prefix, root, files)  # todo: (obj, target, stored rel)
    for kind, keys in placed.items():
        summary[kind], summary[f"{kind}_keys"] = len(keys), keys
    for kind, label in (("refused", "would escape dest"), ("off_layout", "outside the layout"),
                        ("unstorable", "no name this file system can store"),
                        ("renamed", "stored under a shortened name")):
        for key in summary[f"{kind}_keys"][:20]:  # repr shows NUL and backslashes
            log.warning("%s (%s): %r", kind, label, key)
        if summary[kind] > 20:
            log.warning("%s: ... and %d more", kind, summary[kind] - 20)

    # Local checks may hash files (adoption), so run them on the pool too.
    with ThreadPoolExecutor(cfg.workers) as pool:
        states = list(pool.map(lambda t: checked_state(t[0], t[1], files.get(t[0]["key"])), todo))
    fetch, adopted = [], 0
    for (obj, target, rel), state in zip(todo, states, strict=True):
        if isinstance(state, OSError):
            summary["failed"] += 1
            summary["failed_keys"].append(obj["key"])
            log.error("failed: %s: cannot check %s: %s", obj["key"], target, state)
        elif state in ("skipped", "adopted"):
            summary["skipped"] += 1
            if state == "adopted" and not cfg.dry_run:
                adopted += 1
                files[obj["key"]] = {"size": obj["size"], "etag": obj["etag"], "path": rel}
        else:
            fetch.append((state, obj, target, rel))
            summary["planned"].append((state, obj["key"], str(target)))
    meta = {"version": 1, "bucket": cfg.bucket, "prefix": cfg.prefix}
    if cfg.dry_run:
        for state, key, target in summary["planned"]:
            print(f"would download ({state}): {key} -> {target}")
        summary.update(new=sum(s == "new" for s, *_ in fetch), updated=sum(s == "updated" for s, *_ in fetch))
        summary["seconds"] = time.monotonic() - t0
        return summary

    for parent in {target.parent for _, _, target, _ in fetch}:
        try:
            for stale in parent.glob(".btc-*.part") if parent.is_dir() else ():
                stale.unlink(missing_ok=True)  # left by a killed run; never a finished file
        except OSError as exc:  # an unreadable folder: its keys fail (and say why) below
            log.warning("cannot clean %s: %s", parent, exc)
    bar = tqdm(total=sum(obj["size"] for _, obj, _, _ in fetch), unit="B", unit_scale=True,
               unit_divisor=1024, desc="sync", disable=None)
    pool = ThreadPoolExecutor(cfg.workers)
    last_flush = time.monotonic()
    try:
        futures = {pool.submit(download_as, client, cfg, obj, target, rel, bar.update): (state, obj)
                   for state, obj, target, rel in fetch}
        for fut in as_completed(futures):
            state, obj = futures[fut]
            if (exc := fut.exception()) is not None:
                summary["failed"] += 1
                summary["failed_keys"].append(obj["key"])
                log.error("failed: %s: %s", obj["key"], redact(f"{type(exc).__name__}: {exc}", cfg))
                continue
            summary[state] += 1
            summary["bytes"] += obj["size"]
            files[obj["key"]] = {"size": obj["size"], "etag": obj["etag"], "path": fut.result()}
            if time.monotonic() - last_flush > FLUSH_EVERY_S:
                save_manifest(manifest_path, files, meta)
                last_flush = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        if fetch or adopted:
            save_manifest(manifest_path, files, meta)
    summary["seconds"] = time.monotonic() - t0
    return summary


class _ExtendCsv(argparse.Action):
    """argparse action: --address a,b --address c -> ("a", "b", "c")."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, (*getattr(namespace, self.dest), values))  # split in resolve


def build_parser() -> argparse.ArgumentParser:
    """argparse flags 1:1 with SyncConfig; each help = the field's docstring + its default."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(SyncConfig)).body[0].body  # docstring literal under each field
    docs = {a.target.id: " ".join(b.value.value.split()) for a, b in zip(body, body[1:], strict=False)
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)}
    shown = {"address": "all", "manifest": f"{{dest}}/{MANIFEST_NAME}"}
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(SyncConfig):
        default = shown.get(f.name) or (f"{ENV_VARS[f.name]} from the environment, else --env_file"
                                        if f.name in ENV_VARS else "%(default)s")
        kw = {"default": f.default, "help": f"{docs[f.name].replace('%', '%%')} (default: {default})"}
        if f.type == "bool":
            kw["action"] = "store_true"
        elif f.name == "address":
            kw["action"] = _ExtendCsv
        elif f.type in ("int", "float"):
            kw["type"] = int if f.type == "int" else float
        aliases = [f"--{f.name.replace('_', '-')}"] if f.name in ("dry_run", "env_file") else []
        p.add_argument(f"--{f.name}", *aliases, **kw)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: flags 1:1 with SyncConfig; prints one summary line; returns the exit code."""
    p = build_parser()
    cfg = SyncConfig(**vars(p.parse_args(argv)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        s = run(cfg)
    except SyncError as exc:
        print(f"error: {redact(str(exc), cfg)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files are recorded; run again to resume", file=sys.stderr)
        return 130
    what = "dry run (nothing written)" if cfg.dry_run else "sync"
    print(f"{what}: {s['new']} new, {s['updated']} updated, {s['skipped']} skipped, {s['failed']} failed, "
          f"{s['refused']} refused, {s['off_layout']} outside layout, {s['unstorable']} unstorable, "
          f"{s['renamed']} under shortened names; {s['listed']} listed in "
          f"{s['pages']} pages, {s['bytes'] / 1e6:.2f} MB in {s['seconds']:.1f} s -> {cfg.dest}")
    return 1 if s["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
