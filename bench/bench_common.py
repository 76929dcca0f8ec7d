"""What the benchmark scripts share: PNG encoding without PIL, and a free
loopback port."""

import socket
import struct
import zlib


def encode_png(raw, width, height):
    """An 8-bit RGB PNG of `raw`: `height` rows, each a 0 filter byte and
    `width` * 3 bytes."""

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
