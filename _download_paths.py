"""Keys, local paths and the manifest of download_bucket: where each listed key is stored.

Promise: `classify_key` sorts a listed key into ok / refused / off_layout / dir; `place_keys`
maps every ok key to a path under dest that the file system can store (its own name, the path
the manifest recorded for it, or a shortened name) or skips it as unstorable with a reason, and
nothing it returns resolves outside dest; `local_state` says whether the file there is current.
It imports no project module (download_bucket imports none).
No-leakage rule: none (no market data is read here).
Run alone: no CLI; `python download_bucket.py` uses it.

Decisions where the issue is silent:
- A key is stored under its own name when that name and its temp file ("." + name +
  ".XXXXXXXX.part") fit NAME_MAX and the path fits PATH_MAX (os.pathconf of dest, else 255 /
  4096 bytes); else under a shortened name that still matches btc-*_prices.json: the head of its
  stem + "-" + 16 hex of sha256(key) + "_prices.json". A name the file system still refuses
  (NAME_ERRNOS) is fetched once more as btc-<hash>_prices.json (download_bucket.download_as).
- The manifest records each key's path; a later run uses a recorded path (when it is a layout
  path in the key's own address folder that fits here), so it finds the file and skips it when
  unchanged.
- The address folder is the trader's identity downstream and is never renamed: a key whose
  folder, or whose shortest name, cannot be stored is skipped as unstorable with its reason; so
  is a key that would land on a path an earlier key of the listing already took.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import orjson

log = logging.getLogger("download_bucket")

# {address}/btc-...._prices.json, the one layout data_ingestion reads (PRICE_FILE_GLOB btc-*_prices.json)
LAYOUT_RE = re.compile(r"(?P<address>[A-Za-z0-9_.-]+)/btc-[A-Za-z0-9_.-]*_prices\.json")
PLAIN_MD5_RE = re.compile(r"[0-9a-f]{32}")
PRICE_SUFFIX = "_prices.json"
HASH_CHARS = 16  # hex chars of sha256(key) in a shortened name: a collision needs ~2**32 keys
TEMP_EXTRA = 15  # bytes the temp file's name adds: "." + name + ".XXXXXXXX.part"
NAME_ERRNOS = {errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ}
"""errno values meaning "the file system refuses this name"."""


# ----------------------------------------------------------------------------- keys and paths
def classify_key(key: str, prefix: str) -> tuple[str, str]:
    """Classify a listed key -> (status, rel): "ok" | "refused" | "off_layout" | "dir".

    rel = key minus prefix. refused: rel empty, absolute, drive-lettered, with a backslash, NUL or
    control character, or an empty / "." / ".." segment (could escape dest). off_layout: safe but
    not {address}/btc-*_prices.json. dir: a folder marker ("x/" or the prefix itself)."""
    rel = key.removeprefix(prefix)
    if key == prefix or key.endswith("/"):  # never written, so nothing to refuse
        return "dir", rel
    if (not key.startswith(prefix) or not rel or rel.startswith("/") or "\\" in rel
            or any(ord(c) < 32 for c in rel) or re.match(r"[A-Za-z]:", rel)
            or any(seg in ("", ".", "..") for seg in rel.split("/"))):
        return "refused", rel
    return ("ok" if LAYOUT_RE.fullmatch(rel) else "off_layout"), rel


def safe_target(root: Path, rel: str) -> Path | None:
    """Return the resolved path of rel under the resolved root, or None if it would land outside."""
    target = (root / rel).resolve()
    return target if target != root and target.is_relative_to(root) else None


def fs_limits(root: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) in bytes of the file system that holds root (or its nearest existing
    ancestor); 255 / 4096 where os.pathconf cannot tell."""
    probe = root
    while not os.path.isdir(probe) and probe != probe.parent:  # isdir: False on any OSError
        probe = probe.parent
    limits = []
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            value = os.pathconf(probe, name)
        except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no answer
            value = -1
        limits.append(value if value > 0 else default)
    return limits[0], limits[1]


def short_name(name: str, key: str, max_bytes: int) -> str:
    """A layout file name (btc-*_prices.json) for key of at most max(max_bytes, 32) bytes: the
    head of name's stem + "-" + HASH_CHARS hex of sha256(key) + "_prices.json" (the hash tells
    keys apart); with no room for a head (max_bytes <= 33), btc-<hash>_prices.json (32 bytes)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]
    room = max_bytes - len(PRICE_SUFFIX) - 1 - HASH_CHARS
    head = name.removesuffix(PRICE_SUFFIX)[:room] if room > len("btc-") else "btc"
    return f"{head}-{digest}{PRICE_SUFFIX}"


def storage_rel(rel: str, key: str, root: Path, limits: tuple[int, int]) -> tuple[str | None, str]:
    """Where the layout key (rel = {address}/{name}) is stored under root -> (rel path, how).

    how: "own" (rel itself: the name and its temp file fit NAME_MAX, the path fits PATH_MAX),
    "short" (address/short_name(...), which fits), or (None, "address_too_long" |
    "path_too_long") when not even the shortest name fits. Lengths are counted in bytes."""
    name_max, path_max = limits
    address, name = rel.split("/")
    if len(address.encode()) > name_max:
        return None, "address_too_long"
    folder = len(os.fsencode(root / address)) + 1  # bytes before the file name, "/" included

    def fits(n: str) -> bool:
        size = len(n.encode()) + TEMP_EXTRA
        return size <= name_max and folder + size < path_max
    if fits(name):
        return rel, "own"
    short = short_name(name, key, min(name_max, path_max - 1 - folder) - TEMP_EXTRA)
    return (f"{address}/{short}", "short") if fits(short) else (None, "path_too_long")


def recorded_rel(entry: dict | None, rel: str) -> str | None:
    """The path a manifest entry records for a key, if it is a layout path in the key's own
    address folder (so a tampered manifest cannot point anywhere else); else None."""
    path = entry.get("path") if isinstance(entry, dict) else None
    ok = (isinstance(path, str) and LAYOUT_RE.fullmatch(path)
          and path.split("/")[0] == rel.split("/")[0])
    return path if ok else None


def plain_md5(etag: str) -> str | None:
    """Return the MD5 hex digest an ETag stands for, or None for multipart / opaque ETags."""
    etag = etag.strip('"').lower()
    return etag if PLAIN_MD5_RE.fullmatch(etag) else None


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


# ----------------------------------------------------------------------------- manifest
def load_manifest(path: Path) -> dict:
    """Return {key: {"size", "etag", "path"}} from the manifest; {} if absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        files = orjson.loads(path.read_bytes()).get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, orjson.JSONDecodeError, AttributeError) as exc:
        log.warning("manifest %s unreadable (%s); local files will be re-verified", path, exc)
        return {}


def save_manifest(path: Path, files: dict, meta: dict) -> None:
    """Write the manifest atomically (temp file in the same folder + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps({**meta, "files": files}, option=orjson.OPT_SORT_KEYS))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def local_state(obj: dict, target: Path, entry: dict | None) -> str:
    """What one listed object needs -> "skipped" (manifest size + ETag match, file has the size) |
    "adopted" (no matching entry, file size + MD5 match a plain-MD5 ETag) | "updated" (a file or
    entry exists but differs) | "new" (nothing local)."""
    size = target.stat().st_size if target.is_file() else None
    if entry and entry.get("etag") == obj["etag"] and entry.get("size") == obj["size"] == size:
        return "skipped"
    md5 = plain_md5(obj["etag"])
    if size == obj["size"] and md5 is not None and file_md5(target) == md5:
        return "adopted"
    return "updated" if size is not None or entry else "new"


def checked_state(obj: dict, target: Path, entry: dict | None) -> str | OSError:
    """local_state, or the OSError it raised (a file that cannot be checked fails one key only)."""
    try:
        return local_state(obj, target, entry)
    except OSError as exc:
        return exc


def place_keys(objects: list[dict], prefix: str, root: Path, files: dict) -> tuple[list, dict]:
    """Where each listed object goes -> (todo, skipped).

    todo: [(obj, target, stored rel)] for the ok keys that can be stored (target resolved under
    root, one key per target); skipped: {"refused": [key], "off_layout": [key], "unstorable":
    [(key, reason)], "renamed": [(key, stored rel)]} (renamed keys are in todo too)."""
    todo, taken, limits = [], set(), fs_limits(root)
    out = {"refused": [], "off_layout": [], "unstorable": [], "renamed": []}
    for obj in objects:
        status, rel = classify_key(obj["key"], prefix)
        if status in ("refused", "off_layout"):
            out[status].append(obj["key"])
        if status != "ok":
            continue
        stored, how = recorded_rel(files.get(obj["key"]), rel), "recorded"
        if stored is None or storage_rel(stored, obj["key"], root, limits)[1] != "own":
            stored, how = storage_rel(rel, obj["key"], root, limits)  # none, or not storable here
        target = safe_target(root, stored) if stored else None
        if stored and target is None:
            out["refused"].append(obj["key"])
        elif target is None or target in taken:
            out["unstorable"].append((obj["key"], how if target is None else "path_taken_by_another_key"))
        else:
            taken.add(target)
            todo.append((obj, target, stored))
            if stored != rel:
                out["renamed"].append((obj["key"], stored))
    return todo, out
