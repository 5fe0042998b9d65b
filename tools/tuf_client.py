#!/usr/bin/env python3
"""Reference TUF client for Convoy's tests: python-tuf's ngclient.Updater.

Usage: tuf_client.py BASE_URL ROOT_JSON WORK_DIR TARGET...

Bootstraps trust from ROOT_JSON, refreshes the metadata served at BASE_URL/metadata/, downloads
each TARGET from BASE_URL/targets/ into WORK_DIR/targets/, and prints one JSON line per target:
{"name", "path", "length", "sha256", "custom"}. Any verification failure raises, so the exit
code is non-zero. It does nothing else: no retries, no caching between runs.
"""

import json
import os
import sys

from tuf.ngclient import Updater


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, root_path, work_dir, *names = sys.argv[1:]
    metadata_dir = os.path.join(work_dir, "metadata")
    target_dir = os.path.join(work_dir, "targets")
    os.makedirs(metadata_dir, exist_ok=True)
    os.makedirs(target_dir, exist_ok=True)
    with open(root_path, "rb") as f:
        root = f.read()
    updater = Updater(
        metadata_dir=metadata_dir,
        metadata_base_url=base_url.rstrip("/") + "/metadata/",
        target_dir=target_dir,
        target_base_url=base_url.rstrip("/") + "/targets/",
        bootstrap=root,
    )
    updater.refresh()
    for name in names:
        info = updater.get_targetinfo(name)
        if info is None:
            raise SystemExit(f"target {name} is not in the repository")
        path = updater.download_target(info, os.path.join(target_dir, name))
        print(
            json.dumps(
                {
                    "name": name,
                    "path": path,
                    "length": info.length,
                    "sha256": info.hashes.get("sha256"),
                    "custom": info.custom,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
