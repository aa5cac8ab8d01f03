"""Read the records of an offline W&B run (``run-<id>.wandb``) without a W&B server.

wandb >= 0.20 writes them from its Go core and ships no Python reader; the file is a LevelDB-style
log (a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks: crc32 u32, length u16, type u8 —
full 1, first 2, middle 3, last 4) of ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", path
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and n == 0:
            break
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def _items(items: Any) -> dict[str, Any]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def summarize(path: Path) -> dict[str, Any]:
    """{run: {id, name, group, tags, notes}, config, history: [{key: value}], summary, artifacts: [(name, type)]}."""
    doc: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "artifacts": []}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            doc["run"] = {"id": r.run_id, "name": r.display_name, "group": r.run_group, "tags": list(r.tags),
                          "notes": r.notes, "project": r.project}
            doc["config"].update(_items(r.config.update))
        elif kind == "config":
            doc["config"].update(_items(rec.config.update))
        elif kind == "history":
            doc["history"].append(_items(rec.history.item))
        elif kind == "summary":
            doc["summary"].update(_items(rec.summary.update))
        elif kind == "artifact":
            doc["artifacts"].append((rec.artifact.name, rec.artifact.type))
    return doc
