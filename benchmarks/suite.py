"""Helpers of ``benchmarks/device_suite.sh``: the planner's estimate for the suite's grid, and the suite summary.

    python benchmarks/suite.py plan --datasets mnist --data-dir "$JAXMEM_DATA_DIR" --degrees 0,0.2 --seeds 0,1 \
        --json OUT/planner/planner.json
    python benchmarks/suite.py summarize OUT      # OUT/suite.json and OUT/suite.md from what the steps wrote
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import jax

from jaxmem import planner
from jaxmem.cli.flags import DATA, add_arguments, data_loader, nonempty, parse_floats, parse_ints, split_names
from jaxmem.config import paper_train_spec
from jaxmem.results import read_rows

GIB = 2**30


def plan(args) -> dict:
    """The planner's per-device bytes of training and probing the grid (MLP, every probe layer) on this device."""
    dataset = data_loader(args)(args.datasets[0])
    spec = paper_train_spec(dataset.name, "mlp")
    if args.max_epochs:
        spec = spec.replace(max_epochs=args.max_epochs)
    members = len(args.degrees) * len(args.seeds)
    image_shape = dataset.x_train.shape[1:]
    widths = planner.probe_layer_widths("mlp", image_shape, dataset.num_classes)
    common = dict(probe_layers_dims=widths, num_devices=1)
    estimate = {streaming: planner.estimate_memory("mlp", image_shape, dataset.num_classes, spec, members,
                                                   len(dataset.y_train), len(dataset.y_test), streaming=streaming,
                                                   **common)
                for streaming in (False, True)}
    budget = planner.device_memory_bytes()
    result = {"device": str(jax.devices()[0]), "platform": jax.default_backend(), "dataset": dataset.name,
              "model": "mlp", "members": members, "num_train": int(len(dataset.y_train)),
              "num_test": int(len(dataset.y_test)), "device_memory_gib": budget / GIB if budget else None,
              "training_gib": estimate[False]["training"] / GIB,
              "probing_in_memory_gib": estimate[False]["probing"] / GIB,
              "probing_streaming_gib": estimate[True]["probing"] / GIB,
              "total_in_memory_gib": estimate[False]["total"] / GIB,
              "total_streaming_gib": estimate[True]["total"] / GIB}
    for key, value in result.items():
        print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def summarize(out: Path) -> dict:
    """``suite.json``: device, versions, each step's status and wall time, the headline figures; ``suite.md``."""
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line.strip()]
    summary = {"device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
               "platform": jax.default_backend(), "jax": jax.__version__, "python": platform.python_version(),
               "steps": {name: {"exit_status": int(status), "seconds": float(seconds)} for name, status, seconds in steps},
               "figures": {}}
    figures = summary["figures"]
    probe = _json(out / "probe" / "probe.json")
    if probe:
        figures["probe"] = {key: probe.get(key) for key in (
            "fast_s", "exact_s", "reference_s", "speedup_fast_vs_reference", "speedup_exact_vs_reference",
            "agreement_fast_vs_reference", "agreement_exact_vs_reference", "roofline_fraction")}
    for path in sorted((out / "train").glob("train_M*.json")):
        train = _json(path)
        figures[path.stem] = {name: {key: row.get(key) for key in (
            "vmapped_member_samples_per_s", "sequential_member_samples_per_s", "torch_member_samples_per_s",
            "vmapped_over_sequential", "vmapped_over_torch", "compile_vmapped_s")} for name, row in train["workloads"].items()}
    results = out / "grid" / "results.csv"
    if results.exists():
        table = read_rows(results)
        figures["grid"] = {"rows": int(len(table)), "members": int(table["member"].nunique()),
                           "probes": sorted(set(table["probe"])), "last_epoch": int(table["epoch"].max())}
    (out / "suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Device suite on {summary['device_kind']} ({summary['platform']}, jax {summary['jax']})", "",
             "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {step['exit_status']} | {step['seconds']:.1f} |" for name, step in summary["steps"].items()]
    lines += ["", "```json", json.dumps(figures, indent=2), "```", ""]
    (out / "suite.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return summary


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plan_parser = commands.add_parser("plan", help="the planner's estimate for the suite's grid")
    plan_parser.add_argument("--datasets", type=split_names, required=True)
    add_arguments(plan_parser, DATA)
    plan_parser.add_argument("--degrees", type=nonempty(parse_floats), required=True)
    plan_parser.add_argument("--seeds", type=nonempty(parse_ints), required=True)
    plan_parser.add_argument("--max-epochs", type=int, default=None)
    plan_parser.add_argument("--json", type=Path, required=True)
    summary_parser = commands.add_parser("summarize", help="OUT/suite.json and OUT/suite.md")
    summary_parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "plan":
        plan(args)
    else:
        summarize(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
