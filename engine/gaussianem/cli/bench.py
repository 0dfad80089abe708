"""Benchmark the engine on the current device (projection, training, volume generation).

examples:
  gaussianem bench
  gaussianem bench --device cuda --amp -o bench_h100.json
"""

from __future__ import annotations


def add_args(p):
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quick", action="store_true", help="smaller training benchmark")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("-o", "--output", help="write the results as JSON here")


def main(args):
    from gaussianem.bench import print_report, run_all
    from gaussianem.io.atomic import write_json
    res = run_all(args.device, args.quick, args.amp)
    print_report(res)
    if args.output:
        write_json(args.output, res)
    return 0
