"""Protocol-buffer wire encoding shared by the perfetto and pprof exporters (no protobuf
runtime dependency: both formats are a handful of messages)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """Unsigned LEB128; a negative n is encoded as its 64-bit two's complement."""
    if 0 <= n < 0x80:
        return bytes((n,))
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
