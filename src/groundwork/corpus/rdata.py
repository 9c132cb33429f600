"""A minimal reader for R's serialization format and lazy-load databases (``.rdb``/``.rdx``).

Just enough of R's ``unserialize`` (XDR format, versions 2 and 3) to read the character vectors
that the Debian package of ``janeaustenr`` stores, without R. Vectors become Python lists
(``NA`` becomes ``None``; a vector with attributes becomes an :class:`RVector`, a list carrying
them), pairlists become dicts keyed by tag. See R Internals,
section 1.8 "Serialization formats".
"""

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path
from typing import Any

from groundwork.errors import DataError

# SEXP type codes (R Internals 1.1) and the special codes used only in serialized streams.
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP = 0, 1, 2, 3, 4
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, VECSXP = 9, 10, 13, 14, 15, 16, 19
ALTREP_SXP, ATTRLANGSXP, ATTRLISTSXP = 238, 240, 239
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, EMPTYENV_SXP, BASEENV_SXP = 247, 242, 241
NA_INTEGER = -(2**31)


class RVector(list[Any]):
    """An R vector that had attributes; they are kept in ``attrs`` (e.g. ``attrs["names"]``)."""

    attrs: dict[Any, Any]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0
        self.refs: list[Any] = []

    def int32(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return int(v)

    def length(self) -> int:
        n = self.int32()
        if n == -1:  # long vector: two more ints
            n = (self.int32() << 32) + self.int32()
        return n

    def bytes(self, n: int) -> bytes:
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def item(self) -> Any:
        flags = self.int32()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, BASENAMESPACE_SXP):
            return None
        if kind in (UNBOUNDVALUE_SXP, MISSINGARG_SXP):
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int32()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == CHARSXP:
            n = self.int32()
            return None if n == -1 else self.bytes(n).decode("utf-8", errors="replace")
        if kind in (LISTSXP, ATTRLISTSXP, ATTRLANGSXP):
            out: dict[Any, Any] = {}
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else len(out)
                out[tag] = self.item()
                flags = self.int32()  # the cdr: another cons cell or the end
                kind = flags & 0xFF
                has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
                if kind == NILVALUE_SXP:
                    return out
                if kind not in (LISTSXP, ATTRLISTSXP, ATTRLANGSXP):
                    raise DataError(f"unsupported R pairlist tail of type {kind}")
        if kind == ALTREP_SXP:
            info, state, attr = self.item(), self.item(), self.item()
            del attr
            cls = next(iter(info.values())) if isinstance(info, dict) else None
            if cls in ("compact_intseq", "compact_realseq"):
                n, start, step = state
                return [start + i * step for i in range(int(n))]
            if isinstance(cls, str) and cls.startswith("wrap_"):
                return state[0]
            if cls == "deferred_string":
                return [None if x is None else str(x) for x in next(iter(state.values()))]
            raise DataError(f"unsupported R ALTREP class {cls!r}")
        if kind in (LGLSXP, INTSXP):
            n = self.length()
            vals = struct.unpack_from(f">{n}i", self.data, self.pos)
            self.pos += 4 * n
            value: Any = [None if v == NA_INTEGER else v for v in vals]
        elif kind == REALSXP:
            n = self.length()
            value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind in (STRSXP, VECSXP):
            value = [self.item() for _ in range(self.length())]
        else:
            raise DataError(f"unsupported R object type {kind} in serialized data")
        if has_attr:
            attrs = self.item()  # a pairlist: {"names": [...], "class": [...], ...}
            value = RVector(value)
            value.attrs = attrs if isinstance(attrs, dict) else {}
        return value


def unserialize(data: bytes) -> Any:
    """Read one object from R's XDR serialization (``serialize(x, NULL)``)."""
    if data[:2] != b"X\n":
        raise DataError("not an R XDR serialization stream (expected 'X\\n' header)")
    r = _Reader(data)
    r.pos = 2
    version = r.int32()
    r.int32()  # R version that wrote it
    r.int32()  # minimal R version to read it
    if version == 3:
        r.bytes(r.int32())  # native encoding name
    elif version != 2:
        raise DataError(f"unsupported R serialization version {version}")
    return r.item()


def _decompress(blob: bytes) -> bytes:
    """A lazy-load DB record: 4-byte big-endian length, then zlib (or typed bzip2/xz/none)."""
    (n,) = struct.unpack_from(">I", blob, 0)
    body = blob[4:]
    if body[:1] in (b"2", b"X", b"0", b"Z") and body[1:2] != b"\x78":
        kind, body = body[:1], body[1:]
        if kind == b"2":
            return bz2.decompress(body)
        if kind == b"X":
            return lzma.decompress(body)
        if kind == b"0":
            return body[:n]
    return zlib.decompress(body)


def _rds_bytes(path: Path) -> bytes:
    """The serialization stream of an ``.rds``-style file (gzip, bzip2, xz or uncompressed)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_lazyload(stem: Path) -> dict[str, Any]:
    """Read every variable of an R lazy-load database ``stem.rdb`` + ``stem.rdx``.

    Returns:
        ``{variable name: value}``.
    """
    rdx, rdb = stem.with_suffix(".rdx"), stem.with_suffix(".rdb")
    if not (rdx.is_file() and rdb.is_file()):
        raise DataError(f"R lazy-load database {stem}.rdb/.rdx not found")
    index = unserialize(_rds_bytes(rdx))
    variables = index[0]  # list(variables = list(name = c(offset, length)), references, ...)
    names = getattr(variables, "attrs", {}).get("names")
    if not isinstance(names, list) or len(names) != len(variables):
        raise DataError(f"{rdx} has no variable names; is it an R lazy-load index?")
    blob = rdb.read_bytes()
    out = {}
    for name, (offset, size) in zip(names, variables, strict=True):
        out[name] = unserialize(_decompress(blob[int(offset) : int(offset) + int(size)]))
    return out
