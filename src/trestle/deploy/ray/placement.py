"""What a replica asks of Ray, and where it is asked to go (`trestle.deploy.ray`).

- `actor_options`: config.yaml `resources` (Truss's keys) as Ray's actor options: `cpu` ("2",
  "500m") -> `num_cpus` (default 1); `memory` ("2Gi", "512Mi", "1G") -> `memory` in bytes;
  `accelerator` ("A10G", "T4:2") or `use_gpu: true` -> `num_gpus` (the count after the colon,
  default 1).
- `nodes_with_room`: the alive nodes whose resources can hold such a replica, among which the
  backend picks the one with the fewest of the deployment's replicas.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from trestle.deploy.backend import ReadinessError

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTkmgt]i?|m)?[Bb]?\s*$")
_FACTORS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _cpus(value: object) -> float:
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def _bytes(value: object) -> int:
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a memory size (examples: 512Mi, 2Gi, 1G)")
    unit = match.group(2) or ""
    unit = unit[0].upper() + unit[1:] if unit else ""
    return int(float(match.group(1)) * _FACTORS[unit])


def actor_options(source_dir: Path) -> dict:
    """Ray's `num_cpus`, `memory`, `num_gpus` from config.yaml's `resources` (see the module
    docstring). Raises `ReadinessError` on a value it cannot read."""
    try:
        data = yaml.safe_load((source_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    resources = data.get("resources") if isinstance(data, dict) else None
    options: dict = {"num_cpus": 1.0}
    if not isinstance(resources, dict):
        return options
    try:
        if resources.get("cpu") is not None:
            options["num_cpus"] = _cpus(resources["cpu"])
        if resources.get("memory") is not None:
            options["memory"] = _bytes(resources["memory"])
        accelerator = resources.get("accelerator")
        if accelerator:
            _, _, count = str(accelerator).partition(":")
            options["num_gpus"] = float(count or 1)
        elif resources.get("use_gpu"):
            options["num_gpus"] = 1.0
    except ValueError as exc:
        raise ReadinessError(f"config.yaml resources: {exc}") from None
    return options


def nodes_with_room(options: dict) -> list[str]:
    """The ids of the alive nodes whose resources can hold a replica asking for `options`.
    Blocking (asks the cluster)."""
    import ray

    wanted = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0),
              "memory": options.get("memory", 0)}
    return [n["NodeID"] for n in ray.nodes()
            if n.get("Alive") and all(n.get("Resources", {}).get(k, 0) >= v
                                      for k, v in wanted.items() if v)]
