"""Read TFRecord files of ``tf.train.Example`` protos without TensorFlow: framing, CRC32C, protobuf wire.

A TFRecord file is a sequence of records, each framed as (integers little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8 (mod 2**32)``. The records read here are
serialized ``tf.train.Example`` messages::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }          (map entry: key = 1, value = 2)
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1; }
    Int64List { repeated int64 value = 1; }

Parse errors are ``ValueError`` describing the problem; ``read_records`` raises ``FormatError`` naming the
file and the record index.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gnnsim.data.format import FormatError

# ---------------------------------------------------------------------------------------------------------
# CRC32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF)
# ---------------------------------------------------------------------------------------------------------

_POLY = 0x82F63B78
_MASK32 = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8
_PY_MAX_BYTES = 2048  # shorter inputs go through the pure-Python loop, longer ones through numpy lanes


def _byte_table() -> list[int]:
    """Return the 256-entry table: register after shifting in one byte ``i`` from register 0."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _byte_table()

# Feeding bytes to the CRC register is linear over GF(2). A linear map on the register is stored as the
# images of its 32 unit vectors; "feed n zero bytes" lets pieces checksummed separately be combined:
# raw(A || B) = feed_zeros(raw(A), len(B)) ^ raw(B), where raw() starts from register 0.


def _apply(op: tuple[int, ...], v: int) -> int:
    """Apply the linear map ``op`` to the 32-bit register value ``v``."""
    r, i = 0, 0
    while v:
        if v & 1:
            r ^= op[i]
        v >>= 1
        i += 1
    return r


@functools.cache
def _advance_pow2(k: int) -> tuple[int, ...]:
    """Return the map "feed 2**k zero bytes"."""
    if k == 0:
        return tuple(_TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32))
    half = _advance_pow2(k - 1)
    return tuple(_apply(half, half[i]) for i in range(32))


def _advance_value(v: int, n: int) -> int:
    """Return register ``v`` after feeding it ``n`` zero bytes."""
    for k in range(n.bit_length()):
        if n >> k & 1:
            v = _apply(_advance_pow2(k), v)
    return v


def _lookup_tables(op: tuple[int, ...], bits: int) -> list[np.ndarray]:
    """Split ``op`` into ``32 // bits`` lookup tables, one per ``bits``-wide slice of the register."""
    tables = []
    for lo in range(0, 32, bits):
        t = np.zeros(1, np.uint32)
        for i in range(lo, lo + bits):
            t = np.concatenate([t, t ^ np.uint32(op[i])])
        tables.append(t)
    return tables


@functools.cache
def _tables16(k: int) -> list[np.ndarray]:
    """Return the two 65536-entry tables of "feed 2**k zero bytes" (low and high register halves)."""
    return _lookup_tables(_advance_pow2(k), 16)


@functools.cache
def _tables8(k: int) -> list[np.ndarray]:
    """Return the four 256-entry tables of "feed 2**k zero bytes" (one per register byte)."""
    return _lookup_tables(_advance_pow2(k), 8)


def _advance_lanes(c: np.ndarray, k: int) -> np.ndarray:
    """Feed ``2**k`` zero bytes to every register in ``c``."""
    t = _tables8(k)
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24]


def _crc32c_python(data: bytes, crc: int = 0) -> int:
    """Return CRC32C of ``data`` continuing from ``crc``, byte by byte (the reference implementation)."""
    c = crc ^ _MASK32
    table = _TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ _MASK32


def _crc32c_numpy(data: bytes, crc: int = 0) -> int:
    """Return CRC32C of ``data`` continuing from ``crc``, checksumming ``lanes`` interleaved words at once.

    The input, zero-padded at the front to ``steps * lanes`` little-endian uint32 words (leading zeros leave
    a register of 0 unchanged), is viewed as ``[steps, lanes]``; lane ``k`` holds words ``k, k + lanes, ...``.
    Each step feeds one word per lane and advances every lane past the other lanes' words (``4 * lanes``
    zero bytes, two 16-bit table lookups); the lanes are then combined pairwise in a tree.
    """
    n = len(data)
    log_lanes = min(14, max(4, (n // 256).bit_length()))  # about 64 steps, at most 16384 lanes
    lanes = 1 << log_lanes
    steps = -(-n // (4 * lanes))
    padded = np.zeros(steps * 4 * lanes, np.uint8)
    padded[padded.size - n :] = np.frombuffer(data, np.uint8)
    words = padded.view("<u4").reshape(steps, lanes).astype(np.uint32, copy=False)  # [steps, lanes]

    lo_table, hi_table = _tables16(log_lanes + 2)  # feed 4 * lanes zero bytes
    c = np.zeros(lanes, np.uint32)  # [lanes] registers, started from 0
    lo, hi = np.empty_like(c), np.empty_like(c)
    for row in words:
        np.bitwise_and(c, 0xFFFF, out=lo)
        np.right_shift(c, 16, out=hi)
        np.take(lo_table, lo, out=lo)
        np.take(hi_table, hi, out=hi)
        np.bitwise_xor(lo, hi, out=c)
        np.bitwise_xor(c, row, out=c)

    # Lane k still has to pass the 4 bytes after its last word and then the later lanes' 4-byte blocks.
    # Feed the 4 bytes, then merge adjacent blocks pairwise: (left advanced past right) ^ right.
    c = _advance_lanes(c, 2)
    log_width = 2
    while c.size > 1:  # lanes is a power of two
        c = _advance_lanes(c[0::2], log_width) ^ c[1::2]
        log_width += 1
    # The initial register (crc ^ 0xFFFFFFFF) is linear too: advance it past all n bytes and add it in.
    return (_advance_value(crc ^ _MASK32, n) ^ int(c[0])) ^ _MASK32


def crc32c(data: bytes, crc: int = 0) -> int:
    """Return the CRC32C (Castagnoli) checksum of ``data``, continuing from a previous ``crc`` if given.

    ``crc32c(a + b) == crc32c(b, crc32c(a))``; ``crc32c(b"123456789") == 0xE3069283``.
    """
    if len(data) <= _PY_MAX_BYTES:
        return _crc32c_python(data, crc)
    return _crc32c_numpy(data, crc)


def masked_crc32c(data: bytes) -> int:
    """Return the masked CRC32C that TFRecord stores after a record's length and after its data."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _MASK32


# ---------------------------------------------------------------------------------------------------------
# TFRecord framing
# ---------------------------------------------------------------------------------------------------------

_HEADER = struct.Struct("<QI")  # length, masked crc of the 8 length bytes
_FOOTER = struct.Struct("<I")  # masked crc of the data


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Yield the records of a TFRecord file one at a time, checking both CRCs of each.

    Args:
        path: an uncompressed ``.tfrecord`` file.

    Yields:
        Each record's data bytes.

    Raises:
        FormatError: naming the file and record on a CRC mismatch or a truncated file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            where = f"{path}: record {index}"
            if index == 0 and header[:2] == b"\x1f\x8b":
                raise FormatError(f"{where}: the file is gzip-compressed; decompress it first (gunzip)")
            if len(header) < _HEADER.size:
                raise FormatError(
                    f"{where}: file ends inside the record header ({len(header)} of {_HEADER.size} bytes; "
                    "truncated download?)"
                )
            length, length_crc = _HEADER.unpack(header)
            expected = masked_crc32c(header[:8])
            if length_crc != expected:
                raise FormatError(
                    f"{where}: length CRC mismatch (stored 0x{length_crc:08x}, computed 0x{expected:08x}); "
                    "the file is corrupt or not a TFRecord file"
                )
            data = f.read(length)
            footer = f.read(_FOOTER.size)
            if len(data) < length or len(footer) < _FOOTER.size:
                raise FormatError(
                    f"{where}: file ends after {len(data) + len(footer)} of {length + _FOOTER.size} bytes of "
                    "record data and CRC (truncated download?)"
                )
            (data_crc,) = _FOOTER.unpack(footer)
            expected = masked_crc32c(data)
            if data_crc != expected:
                raise FormatError(
                    f"{where}: data CRC mismatch over {length} bytes (stored 0x{data_crc:08x}, computed "
                    f"0x{expected:08x}); the file is corrupt, download it again"
                )
            yield data
            index += 1


# ---------------------------------------------------------------------------------------------------------
# Protobuf wire format of tf.train.Example
# ---------------------------------------------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class Feature(NamedTuple):
    """One entry of an Example's feature map."""

    kind: str  # "bytes_list" | "float_list" | "int64_list"
    values: list[memoryview] | np.ndarray  # bytes values (views into the record), float32 or int64 array


_FEATURE_KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``pos``; return (value, position after it)."""
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"malformed tf.train.Example: a varint runs past the end ({len(buf)} bytes)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"malformed tf.train.Example: a varint at byte {pos} is longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) of a message; length-delimited values are views into ``buf``."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _LENGTH_DELIMITED:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise ValueError(
                    f"malformed tf.train.Example: field {number} claims {size} bytes, {end - pos} are left"
                )
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise ValueError(f"malformed tf.train.Example: fixed-size field {number} runs past the end")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"malformed tf.train.Example: field {number} has unsupported wire type {wire}")
        yield number, wire, value


def _parse_feature(buf: memoryview) -> Feature:
    """Parse a ``Feature`` message (the last of its oneof members wins, as in protobuf)."""
    feature = Feature("bytes_list", [])  # an empty Feature reads as an empty list
    for number, wire, value in _fields(buf):
        kind = _FEATURE_KINDS.get(number)
        if kind is None or wire != _LENGTH_DELIMITED:
            continue
        if kind == "bytes_list":
            values = [v for n, w, v in _fields(value) if n == 1 and w == _LENGTH_DELIMITED]
            feature = Feature(kind, values)
        elif kind == "float_list":
            raw = b"".join(v for n, w, v in _fields(value) if n == 1 and w in (_LENGTH_DELIMITED, _FIXED32))
            if len(raw) % 4:
                raise ValueError(f"malformed tf.train.Example: float_list of {len(raw)} bytes (4 per value)")
            feature = Feature(kind, np.frombuffer(raw, "<f4").astype(np.float32))
        else:
            ints: list[int] = []
            for n, w, v in _fields(value):
                if n != 1:
                    continue
                if w == _VARINT:
                    ints.append(v)
                elif w == _LENGTH_DELIMITED:  # packed
                    pos = 0
                    while pos < len(v):
                        x, pos = _read_varint(v, pos)
                        ints.append(x)
            feature = Feature(kind, np.array([x - (1 << 64) if x >> 63 else x for x in ints], np.int64))
    return feature


def parse_example(data: bytes | memoryview) -> dict[str, Feature]:
    """Parse a serialized ``tf.train.Example`` into its feature map (bytes values are views into ``data``).

    Raises:
        ValueError: the bytes are not a well-formed Example.
    """
    features: dict[str, Feature] = {}
    for number, wire, features_msg in _fields(memoryview(data)):
        if number != 1 or wire != _LENGTH_DELIMITED:
            continue
        for number, wire, entry in _fields(features_msg):
            if number != 1 or wire != _LENGTH_DELIMITED:
                continue
            key, value = "", memoryview(b"")
            for n, w, v in _fields(entry):
                if n == 1 and w == _LENGTH_DELIMITED:
                    key = bytes(v).decode("utf-8", errors="replace")
                elif n == 2 and w == _LENGTH_DELIMITED:
                    value = v
            features[key] = _parse_feature(value)
    return features
