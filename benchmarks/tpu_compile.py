"""Every shipped preset compiled for its target TPU slice and one larger slice, on this machine
(libtpu's compile-only client; no TPU): fits, GiB per chip, the TPU cost model's estimated step
time and MFU (estimates of XLA's cost model, not measurements), and the compile's wall time and
peak host memory here.

  python benchmarks/tpu_compile.py [--only=pretrain:base] [--target-only | --larger-only]
      [--compile_layers=1,2,3] [--out=benchmarks/results/tpu.json]

Each compile runs `python -m unimo_jax.main --mode=compile` in its own process (so its host
memory is measured alone and freed). Scanned presets compile three programs (the step, and 1 and
2 unrolled layers for the per-layer estimate, or the counts --compile_layers names), so a row
takes minutes on 2 cores.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (config, preset, target slice, larger slice, overrides for the larger slice)
ROWS = [
    ("pretrain", "base", "v5e-16", "v5e-32", ()),
    # fsdp 32 would leave the replicated biases and LayerNorms 3 % over an even split, past the
    # start-up sharding check's 2 %: the larger slice adds a data axis instead
    ("pretrain", "large", "v5p-32", "v5p-64", ("--config.mesh.data=2",)),
    ("caption", "base", "v5e-8", "v5e-16", ()),
    ("retrieval", "base", "v5e-8", "v5e-16", ()),
    ("vqa", "base", "v5e-8", "v5e-16", ()),
    ("snli_ve", "base", "v5e-8", "v5e-16", ()),
    ("glue", "base", "v5e-8", "v5e-16", ()),
    ("seq2seq", "base", "v5e-8", "v5e-16", ()),
    ("cnndm", "base", "v5e-8", "v5e-16", ()),
]


# Runs unimo_jax.main in the child and reports the child's own peak RSS when it exits.
_CHILD = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('PEAK_RSS_KB', "
          "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)); "
          "sys.argv = ['unimo_jax.main'] + sys.argv[1:]; "
          "runpy.run_module('unimo_jax.main', run_name='__main__')")


def compile_row(config, preset, topology, overrides=()):
  """(report or None, output tail, wall seconds, peak RSS bytes) of one compile."""
  with tempfile.TemporaryDirectory() as workdir:
    args = [sys.executable, "-c", _CHILD, "--mode=compile", f"--topology={topology}",
            f"--config=configs/{config}.py:{preset}", f"--workdir={workdir}", *overrides]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rss = 0
    for line in result.stderr.splitlines():
      if line.startswith("PEAK_RSS_KB"):
        rss = int(line.split()[1]) * 1024
    path = pathlib.Path(workdir) / "compile_report.json"
    report = json.loads(path.read_text()) if path.exists() else None
  return report, (result.stdout + result.stderr)[-2000:], seconds, rss


def row_line(config, preset, topology, report, tail, seconds, rss):
  if report is None:
    reason = "does not fit" if "does not fit" in tail else "failed"
    return (f"| {config}:{preset} | {topology} | {reason} | | | | {seconds:.0f} s | "
            f"{rss / 2 ** 30:.1f} GiB |")
  step = report["train_step"]
  mem = step["memory_per_chip"]
  est = step.get("estimated_step_seconds")
  mfu = step.get("estimated_mfu")
  increment = step.get("per_layer_increment") or {"plausible": True}
  warning = ("" if increment["plausible"] else
             f" (optimistic: one more layer at {100 * increment['fraction_of_peak']:.0f} % of peak)")
  if not increment.get("linear", True):
    warning += (f" (uncertain: the unrolled compiles lie up to "
                f"{100 * increment['line_residual']:.0f} % off the per-layer line)")
  return (f"| {config}:{preset} | {topology} | {'yes' if step['fits'] else 'no'} | "
          f"{mem['total'] / 2 ** 30:.2f} ({100 * mem['headroom']:.0f} % free) | "
          f"{'' if est is None else f'{1e3 * est:.0f} ms'}{warning} | "
          f"{'' if mfu is None else f'{100 * mfu:.1f} %'} | {seconds:.0f} s | "
          f"{rss / 2 ** 30:.1f} GiB |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="",
                      help="comma-separated config:preset rows to run, e.g. pretrain:base,vqa:base")
  slices = parser.add_mutually_exclusive_group()
  slices.add_argument("--target-only", action="store_true", help="skip the larger slices")
  slices.add_argument("--larger-only", action="store_true", help="skip the target slices")
  parser.add_argument("--compile_layers", default="1,2",
                      help="unrolled layer counts for the scanned presets' per-layer estimate")
  parser.add_argument("--out", default="", help="also write the reports as JSON here")
  args = parser.parse_args()
  print("| preset | slice | fits | GiB per chip | est. step | est. MFU | compile wall | "
        "peak host RSS |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
  results = []
  for config, preset, target, larger, overrides in ROWS:
    if args.only and f"{config}:{preset}" not in args.only.split(","):
      continue
    for topology in (target,) * (not args.larger_only) + (larger,) * (not args.target_only):
      report, tail, seconds, rss = compile_row(
          config, preset, topology, (f"--compile_layers={args.compile_layers}",
                                     *(overrides if topology == larger else ())))
      print(row_line(config, preset, topology, report, tail, seconds, rss), flush=True)
      results.append({"config": config, "preset": preset, "topology": topology,
                      "report": report, "wall_seconds": seconds, "peak_rss_bytes": rss,
                      "tail": None if report else tail})
      if args.out:  # rewritten after every row, so a stopped run keeps what it measured
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
