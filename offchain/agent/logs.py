"""A containerised job's output, read back from the engine's log file.

Both engines write one entry per line of output, in order, each tagged with its stream:

- podman's `k8s-file`: `<RFC 3339 time> <stdout|stderr> <tags> <text>`, where the tag `P` marks a partial line
  (the job wrote no newline yet, or the line was longer than the engine's buffer) and `F` a full one, whose newline
  the entry leaves out;
- docker's `json-file`: `{"log": "<text, with its newline if it had one>", "stream": ..., "time": ...}`.

`read_chunks` turns either into `LogChunk`s from a byte offset of the file, consuming only whole entries, so that
a reader that stops anywhere resumes at the offset it was given without loss or repeat while the job writes on.
A stream's bytes are the concatenation of its chunks, exactly as the job wrote them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Iterator

from eth_hash.auto import keccak

STREAMS = ("stdout", "stderr")
_READ_BLOCK = 1 << 20


class LogFormat(StrEnum):
    K8S_FILE = "k8s-file"
    JSON_FILE = "json-file"


@dataclass(frozen=True)
class LogChunk:
    """Bytes one stream of the job wrote, when (the engine's timestamp, as it wrote it), and the byte offset of
    the log right after its entry (where a reader that has this chunk resumes)."""

    stream: str
    data: bytes
    time: str
    end: int = 0


def _parse_k8s(line: bytes, end: int) -> LogChunk | None:
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1].decode(errors="replace") not in STREAMS:
        return None
    text = parts[3] if len(parts) == 4 else b""
    full = b"P" not in parts[2].split(b":")
    return LogChunk(parts[1].decode(), text + (b"\n" if full else b""), parts[0].decode(errors="replace"), end)


def _parse_json(line: bytes, end: int) -> LogChunk | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("stream") not in STREAMS or not isinstance(entry.get("log"), str):
        return None
    return LogChunk(entry["stream"], entry["log"].encode(), str(entry.get("time", "")), end)


_PARSERS = {LogFormat.K8S_FILE: _parse_k8s, LogFormat.JSON_FILE: _parse_json}


def read_chunks(
    path: Path, fmt: LogFormat, offset: int = 0, limit_bytes: int | None = None
) -> tuple[list[LogChunk], int]:
    """The chunks of the whole entries from byte `offset` of the log (at most about `limit_bytes` of it) and the
    offset to continue from. A missing log reads as empty."""
    parse = _PARSERS[fmt]
    try:
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read(limit_bytes if limit_bytes is not None else -1)
    except FileNotFoundError:
        return [], offset
    last = data.rfind(b"\n")
    if last < 0:
        return [], offset
    chunks, position = [], offset
    for line in data[:last].split(b"\n"):
        position += len(line) + 1
        if (chunk := parse(line, position)) is not None:
            chunks.append(chunk)
    return chunks, offset + last + 1


def iter_stream(path: Path, fmt: LogFormat, stream: str) -> Iterator[bytes]:
    """The bytes `stream` wrote, in order, from the whole log."""
    offset = 0
    while True:
        chunks, next_offset = read_chunks(path, fmt, offset, _READ_BLOCK)
        if next_offset == offset:
            if path.exists() and path.stat().st_size > offset:
                # One entry longer than a block: read it whole.
                chunks, next_offset = read_chunks(path, fmt, offset)
                if next_offset == offset:
                    return
            else:
                return
        for chunk in chunks:
            if chunk.stream == stream:
                yield chunk.data
        offset = next_offset


def stream_digest(path: Path, fmt: LogFormat, stream: str = "stdout") -> bytes:
    """keccak256 of everything `stream` wrote."""
    hasher = keccak.new(b"")
    for data in iter_stream(path, fmt, stream):
        hasher.update(data)
    return hasher.digest()
