"""Time ``stanchion import-filestore`` on a large synthetic reference store.

Not part of the test suite (too slow). Writes a FILE store in the reference
format (tests/helpers/filestore_writer.py) with one channel of ``--msgs``
messages of ``--size`` bytes in slices of ``--slice_msgs``, starts a
nats-server and one stanchion node (default flags: LMDB store, fsync on every
commit), runs the import as a separate process and reports how long it took.
Every process is stopped by its PID at the end.

    .venv/bin/python tests/bench_import_filestore.py              # 1,000,000 x 128 B
    .venv/bin/python tests/bench_import_filestore.py --msgs 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import NatsServer, StanNodeFactory  # noqa: E402
from tests.helpers.filestore_writer import FileStoreWriter  # noqa: E402
from tests.helpers.import_cli import import_command  # noqa: E402

CLUSTER_ID = "test-cluster"
T0 = 1_790_000_000_000_000_000


def write_store(root: Path, msgs: int, size: int, slice_msgs: int) -> float:
    start = time.monotonic()
    w = FileStoreWriter(root, CLUSTER_ID)
    w.server()
    w.clients([])
    payload = os.urandom(size)
    with w.channel("bench", slice_max_msgs=slice_msgs) as ch:
        for seq in range(1, msgs + 1):
            ch.append(seq, payload, T0 + seq * 1000)
    return time.monotonic() - start


def rss(pid: int) -> dict[str, int]:
    """RssAnon and RssFile (kB) of a running process."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--msgs", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--slice_msgs", type=int, default=250_000)
    p.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("extra", nargs="*", help="extra import-filestore options (after --)")
    args = p.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "reference-store"
    nats = NatsServer(work / "nats-server.log")
    nodes = StanNodeFactory("", CLUSTER_ID, work)
    try:
        print(f"writing {args.msgs} messages of {args.size} B to {store} ...", flush=True)
        wrote = write_store(store, args.msgs, args.size, args.slice_msgs)
        on_disk = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        print(f"  {wrote:.1f} s, {on_disk / 1e6:.1f} MB on disk", flush=True)

        nats.start()
        nodes.nats_url = nats.url
        node = nodes(name="target", debug=False)

        cmd = import_command(store, "-ns", nats.url, "--progress", "lines", *args.extra)
        print("running:", " ".join(cmd), flush=True)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], text=True)
        peak = {"RssAnon": 0, "RssFile": 0}
        try:
            while proc.poll() is None:
                for key, kb in rss(proc.pid).items():
                    peak[key] = max(peak[key], kb)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        elapsed = time.monotonic() - start
        if proc.returncode != 0:
            print(f"import failed with status {proc.returncode}", file=sys.stderr)
            return 1
        serverz = node.monitor("/streaming/serverz")
        assert serverz["total_msgs"] == args.msgs, serverz
        figure = {
            "figure": "import-filestore",
            "msgs": args.msgs,
            "msg_size": args.size,
            "slices": -(-args.msgs // args.slice_msgs),
            "store_mb": round(on_disk / 1e6, 1),
            "seconds": round(elapsed, 2),
            "msgs_per_s": round(args.msgs / elapsed),
            # Anonymous memory is what the importer allocates; file pages are
            # the memory-mapped slice being read, released as it moves on.
            "importer_peak_anon_mb": round(peak["RssAnon"] / 1024, 1),
            "importer_peak_file_mb": round(peak["RssFile"] / 1024, 1),
            "node_store_mb": round(
                (work / "target" / "data" / "store" / "data.mdb").stat().st_size / 1e6, 1
            ),
        }
        print("FIGURE", json.dumps(figure))
        return 0
    finally:
        nodes.stop_all()
        nats.stop()
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
