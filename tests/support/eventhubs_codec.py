"""Byte-level AMQP 1.0 helpers for the Event Hubs test broker (see ``eventhubs_broker``).

Just what the broker needs and no more: skipping over encoded values, padding performatives to
their full arity (the SDK's decoder reads fields by position; proton leaves out trailing nulls),
splitting the SDK's batch messages, and stamping the broker's message annotations onto an event
without decoding it.
"""

from __future__ import annotations

import struct

# Number of fields of each performative, by descriptor code (AMQP 1.0 transport and SASL).
_ARITY = {
    0x10: 10,  # open
    0x11: 8,  # begin
    0x12: 14,  # attach
    0x13: 11,  # flow
    0x14: 11,  # transfer
    0x15: 6,  # disposition
    0x16: 3,  # detach
    0x17: 1,  # end
    0x18: 1,  # close
    0x40: 1,  # sasl-mechanisms
    0x41: 3,  # sasl-init
    0x42: 1,  # sasl-challenge
    0x43: 1,  # sasl-response
    0x44: 2,  # sasl-outcome
}
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")


def skip_value(buf: bytes, pos: int) -> int:
    """Return the position just after the AMQP-encoded value starting at ``pos``."""
    code = buf[pos]
    if code == 0x00:  # described: descriptor, then value
        return skip_value(buf, skip_value(buf, pos + 1))
    width = code >> 4
    if width == 0x4:
        return pos + 1
    if width <= 0x9:
        return pos + 1 + {0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}[width]
    if width in (0xA, 0xC, 0xE):
        return pos + 2 + buf[pos + 1]
    return pos + 5 + _U32.unpack_from(buf, pos + 1)[0]


def _compound_bounds(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(count, start of the items, end) of the list or map encoded at ``pos``."""
    code = buf[pos]
    if code == 0x45:
        return 0, pos + 1, pos + 1
    if code in (0xC0, 0xC1):
        return buf[pos + 2], pos + 3, pos + 2 + buf[pos + 1]
    if code in (0xD0, 0xD1):
        size, count = struct.unpack_from(">II", buf, pos + 1)
        return count, pos + 9, pos + 5 + size
    raise ValueError(f"not a list or map: 0x{code:02x}")


def _encode_list(items: bytes, count: int) -> bytes:
    if len(items) < 255 and count < 256:
        return bytes((0xC0, len(items) + 1, count)) + items
    return b"\xd0" + struct.pack(">II", len(items) + 4, count) + items


def pad_frame(frame: bytes) -> bytes:
    """Pad the performative of one AMQP/SASL frame with nulls up to its full arity."""
    if len(frame) <= 8:
        return frame  # empty (heartbeat) frame
    body = frame[4] * 4
    if frame[body] != 0x00:
        return frame
    if frame[body + 1] == 0x53:
        code, list_pos = frame[body + 2], body + 3
    else:  # ulong descriptor
        code, list_pos = _I64.unpack_from(frame, body + 2)[0], body + 10
    arity = _ARITY.get(code)
    if arity is None:
        return frame
    count, start, end = _compound_bounds(frame, list_pos)
    if count >= arity:
        return frame
    items = frame[start:end] + b"\x40" * (arity - count)
    out = frame[4:list_pos] + _encode_list(items, arity) + frame[end:]
    return _U32.pack(len(out) + 4) + out


class FramePadder:
    """Cuts a stream of outgoing bytes into frames and pads each one (see :func:`pad_frame`)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._rest + data if self._rest else data
        out = []
        pos, n = 0, len(buf)
        while n - pos >= 8:
            if buf[pos : pos + 4] == b"AMQP":  # protocol header
                out.append(buf[pos : pos + 8])
                pos += 8
                continue
            size = _U32.unpack_from(buf, pos)[0]
            if n - pos < size:
                break
            out.append(pad_frame(buf[pos : pos + size]))
            pos += size
        self._rest = buf[pos:]
        return b"".join(out)


def _sym(name: bytes) -> bytes:
    return bytes((0xA3, len(name))) + name


def string(value: str) -> bytes:
    raw = value.encode()
    if len(raw) < 256:
        return bytes((0xA1, len(raw))) + raw
    return b"\xb1" + _U32.pack(len(raw)) + raw


def binary(raw: bytes) -> bytes:
    if len(raw) < 256:
        return bytes((0xA0, len(raw))) + raw
    return b"\xb0" + _U32.pack(len(raw)) + raw


def _decode_text(buf: bytes, pos: int) -> str | None:
    code = buf[pos]
    if code in (0xA1, 0xA3):
        return buf[pos + 2 : pos + 2 + buf[pos + 1]].decode()
    if code in (0xB1, 0xB3):
        size = _U32.unpack_from(buf, pos + 1)[0]
        return buf[pos + 5 : pos + 5 + size].decode()
    return None


def _sections(msg: bytes) -> list[tuple[int, int, int]]:
    """(descriptor code, start, end) of each top-level section of an encoded message."""
    out, pos = [], 0
    while pos < len(msg):
        if msg[pos] != 0x00 or msg[pos + 1] != 0x53 or not 0x70 <= msg[pos + 2] <= 0x78:
            raise ValueError(f"not a message section at byte {pos}")
        end = skip_value(msg, pos + 3)
        if end > len(msg):
            raise ValueError("truncated message section")
        out.append((msg[pos + 2], pos, end))
        pos = end
    return out


def _annotations(msg: bytes, sections: list[tuple[int, int, int]]) -> list[tuple[str | None, int, int, int]]:
    """(key, start of the entry, start of the value, end) of each message annotation."""
    out = []
    for code, start, _end in sections:
        if code == 0x72:
            _count, pos, stop = _compound_bounds(msg, start + 3)
            while pos < stop:
                value_start = skip_value(msg, pos)
                value_end = skip_value(msg, value_start)
                out.append((_decode_text(msg, pos), pos, value_start, value_end))
                pos = value_end
    return out


def split_batch(msg: bytes) -> list[bytes] | None:
    """The encoded events of an SDK batch message (data sections that are whole messages), else None."""
    inner = []
    for code, start, end in _sections(msg):
        if code == 0x75:
            value = msg[start + 3 : end]
            header = 2 if value[0] == 0xA0 else 5
            inner.append(value[header:])
    if not inner:
        return None
    try:
        for item in inner:
            _sections(item)
    except (ValueError, IndexError, KeyError):
        return None
    return inner


def partition_key_of(msg: bytes) -> str | None:
    for key, _start, value_start, _end in _annotations(msg, _sections(msg)):
        if key == "x-opt-partition-key":
            return _decode_text(msg, value_start)
    return None


_OWN_ANNOTATIONS = ("x-opt-sequence-number", "x-opt-offset", "x-opt-enqueued-time", "x-opt-partition-key")


def stamp(msg: bytes, seq: int, offset: str, enqueued_ms: int, partition_key: str | None) -> tuple[bytes, bytes | None]:
    """Return (the message with the broker's annotations, its data body or None)."""
    sections = _sections(msg)
    entries = [
        _sym(b"x-opt-sequence-number") + b"\x81" + _I64.pack(seq),
        _sym(b"x-opt-offset") + string(offset),
        _sym(b"x-opt-enqueued-time") + b"\x83" + _I64.pack(enqueued_ms),
    ]
    if partition_key is not None:
        entries.append(_sym(b"x-opt-partition-key") + string(partition_key))
    for key, start, _value_start, end in _annotations(msg, sections):
        if key not in _OWN_ANNOTATIONS:
            entries.append(msg[start:end])
    items = b"".join(entries)
    count = 2 * len(entries)
    if len(items) < 255:
        amap = bytes((0xC1, len(items) + 1, count)) + items
    else:
        amap = b"\xd1" + struct.pack(">II", len(items) + 4, count) + items
    before = [msg[s:e] for code, s, e in sections if code < 0x72]
    after = [msg[s:e] for code, s, e in sections if code > 0x72]
    data = [msg[s + 3 : e] for code, s, e in sections if code == 0x75]
    body = b"".join(d[2:] if d[0] == 0xA0 else d[5:] for d in data) if data else None
    return b"".join(before) + b"\x00\x53\x72" + amap + b"".join(after), body


def data_message(body: bytes) -> bytes:
    """An encoded message with just this data section."""
    return b"\x00\x53\x75" + binary(body)
