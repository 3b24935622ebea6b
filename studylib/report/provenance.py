"""What a rendered report must state about itself: hardware, versions, threads, the data it read
(by content hash) and, per study row, the weights file and the device that trained it.

    info = collect("full")        # JSON-able; run_all.py puts it in reports/index.html and timings.json
"""

from __future__ import annotations

import os

import torch

from .. import artifacts, config, data, measure, runtime, ship
from ..serve import deploy


def data_provenance(data_dir=None) -> dict:
    """The CIFAR-10 folder read and a content hash of each split (pixels + labels), so two reports
    can be checked to have used the same data without trusting file checksums."""
    folder, source = data.resolve_data_dir(data_dir)
    out = {"folder": config.display_path(folder), "found_via": source}
    for split in ("train", "test"):
        s = data.load_cifar10(split, data_dir)
        out[split] = {"images": len(s), "sha256_12": artifacts.hash_tensor(s.images) + artifacts.hash_tensor(s.labels)}
    return out


def rows_provenance(profile: str, weights_dir=None) -> list[dict]:
    """Per study row: status, the run folder, the device it trained on, and for transfer rows the
    weights file with its sha256 (or why the row could not run)."""
    out = []
    for name, row in deploy.load_all(profile, weights_dir=weights_dir).items():
        rec = {"model": name, "label": row.label, "status": row.status}
        if not row.row.scratch:
            w = row.weights
            rec["weights"] = w and {k: w[k] for k in ("source", "file", "sha256", "matches_published_sha256")}
        if row.ok:
            m = row.metrics
            env = m.get("environment", {})
            rec.update(run=row.run.id, source="shipped (runs/)" if row.run.shipped else "artifact store",
                       trained_on=runtime.device_label(m), torch=env.get("torch"), cuda=env.get("cuda"),
                       cudnn=env.get("cudnn"), precision=m.get("precision"), train_seconds=m.get("train_seconds"))
        out.append(rec)
    return out


def collect(profile: str, data_dir=None, weights_dir=None) -> dict:
    return {"machine": {**measure.cpu_info(), "threads": torch.get_num_threads()},
            "profile": profile, "artifacts": f"${config.ARTIFACTS_DIR_ENV}" if os.environ.get(config.ARTIFACTS_DIR_ENV)
            else config.display_path(config.artifacts_dir()),
            "data": data_provenance(data_dir), "rows": rows_provenance(profile, weights_dir),
            "shipped_files": len(ship.read_manifest())}
