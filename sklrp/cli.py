"""``sklrp audit`` on the command line: argument parsing and exit codes only.

The work is done by :mod:`sklrp.audit` (see :func:`sklrp.audit.audit`). Exit codes: 0 success;
2 bad input (an argument, a missing or wrong file, data that do not fit the model) with a one-line
message on stderr and nothing written; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), with
the temporary report folder removed.
"""

from __future__ import annotations

import argparse
import signal
import sys

__all__ = ["main", "build_parser"]

_PERTURBATIONS = ("mean", "uniform", "blur", "flip")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (``sklrp audit: error: ...``, exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    p = _Parser(prog="sklrp", description="Layer-wise Relevance Propagation for scikit-learn.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    a = sub.add_parser(
        "audit", help="explain a fitted model on data and write an HTML audit report",
        description="Explain a fitted model with LRP, search every class for a separate prediction strategy "
                    "(a possible Clever Hans), evaluate the heatmaps (AOPC) and write report.html, PNG figures "
                    "and summary.json.")
    a.add_argument("model", nargs="?", help="fitted estimator or pipeline saved with joblib.dump")
    a.add_argument("data", nargs="?", help=".npz file with X, optional y, masks and image_shape")
    a.add_argument("--demo", action="store_true",
                   help="generate Clever-Hans data, train an SVM and a CNN, and audit them")
    a.add_argument("--out", default="audit-report", help="output directory (default: audit-report)")
    a.add_argument("--n-jobs", type=int, default=None, help="joblib workers (default: 1; -1: all cores)")
    a.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda[:N] (default: auto)")
    a.add_argument("--rule", default="epsilon", help="LRP rule for intermediate layers (default: epsilon)")
    a.add_argument("--epsilon", type=float, default=1e-2, help="epsilon of the epsilon rule (default: 0.01)")
    a.add_argument("--region-size", type=int, default=None,
                   help="side of the perturbed regions in pixels (default: image side / 8)")
    a.add_argument("--n-steps", type=int, default=None,
                   help="perturbation steps L (default: all regions)")
    a.add_argument("--perturbation", default="mean", choices=_PERTURBATIONS,
                   help="region perturbation g of Eq. (3.6) (default: mean)")
    a.add_argument("--aopc-samples", type=int, default=64,
                   help="samples whose perturbation curves are computed (default: 64)")
    a.add_argument("--alpha", type=float, default=0.05,
                   help="flag classes whose subgroup p-value is at most this (default: 0.05)")
    a.add_argument("--probe", action="store_true",
                   help="test reliance: paste each flagged class's distinctive region into other classes' "
                        "images and report the predictions that flip")
    a.add_argument("--max-samples", type=int, default=None, help="audit the first N samples only")
    a.add_argument("--demo-samples", type=int, default=800,
                   help="size of the generated demo data, half for training (default: 800)")
    a.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clean-up runs as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv=None):
    """Entry point of the ``sklrp`` console script and ``python -m sklrp``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        from .audit.command import run
        from .audit.errors import AuditError

        try:
            run(args)
        except AuditError as exc:
            print(f"sklrp audit: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("sklrp audit: interrupted; nothing was written", file=sys.stderr)
        return 130
    except _Terminated:
        print("sklrp audit: terminated; nothing was written", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
