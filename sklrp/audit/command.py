"""What ``sklrp audit`` does with its parsed arguments: check everything cheap first, then audit.

Order of work: argument values, the output folder, the data file (numpy only), the model file,
then everything that needs torch. A bad argument or file therefore fails in well under a second
(before torch is imported) with one line and exit code 2, and nothing is written.
"""

from __future__ import annotations

import os
import re
import sys

from .errors import AuditError

__all__ = ["run", "check_args"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _warn(msg):
    print(f"sklrp audit: warning: {msg}", file=sys.stderr)


def check_args(args):
    """Checks that need no file and no torch."""
    if args.n_jobs == 0:
        raise AuditError("--n-jobs must be a positive number of workers or negative (-1: all cores), not 0")
    if not _DEVICE.match(args.device):
        raise AuditError(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")
    for flag, value in (("--aopc-samples", args.aopc_samples), ("--max-samples", args.max_samples),
                        ("--demo-samples", args.demo_samples), ("--n-steps", args.n_steps),
                        ("--region-size", args.region_size)):
        if value is not None and value < 1:
            raise AuditError(f"{flag} must be >= 1, got {value}")
    if args.demo_samples < 60:
        raise AuditError(f"--demo-samples must be >= 60 (half are used for training), got {args.demo_samples}")
    if not 0.0 < args.alpha < 1.0:
        raise AuditError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if not args.epsilon > 0:
        raise AuditError(f"--epsilon must be > 0, got {args.epsilon}")
    if args.demo and (args.model or args.data):
        raise AuditError("--demo takes no MODEL or DATA arguments")
    if not args.demo and (not args.model or not args.data):
        raise AuditError("give MODEL and DATA files, or --demo")


def _check_torch_args(args):
    """Checks that need sklrp's rules or torch (after the files are known to be good)."""
    from ..rules import make_rule

    try:
        make_rule(args.rule, epsilon=args.epsilon)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"--rule/--epsilon: {str(exc).splitlines()[0]}") from None
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise AuditError(f"--device {args.device} was requested but CUDA is not available on this machine")


def run(args):
    """Run ``sklrp audit`` for parsed arguments; returns the summary dict."""
    from .inputs import aopc_setup, image_shape_of, load_data, load_model
    from .workspace import check_out

    verbose = not args.quiet
    check_args(args)
    check_out(args.out)
    if args.demo:
        shape = (32, 32)
        kw_data = None
    else:
        X, y, masks, image_shape = load_data(args.data)
        shape = image_shape_of(X, image_shape)
        kw_data = (X, y, masks, image_shape)
    _, _, _, warning = aopc_setup(shape, args.region_size, args.n_steps)
    if warning:
        _warn(warning)
    if args.demo:
        _check_torch_args(args)
        from .demo import demo_data, demo_models

        (Xtr, ytr), (X, y, wm, masks) = demo_data(args.demo_samples, args.seed)
        if verbose:
            print(f"demo: training models on {len(Xtr)} Clever-Hans images ...", file=sys.stderr)
        models, notes = demo_models(Xtr, ytr, device=args.device, random_state=args.seed)
        kw = dict(masks=masks, ground_truth=wm, image_shape=X.shape[1:],
                  data_name="make_clever_hans (demo: a quarter of class 0 carries a tag in the bottom-left corner)")
    else:
        X, y, masks, image_shape = kw_data
        model = load_model(args.model)
        _check_torch_args(args)
        models, notes = {os.path.splitext(os.path.basename(args.model))[0]: model}, []
        kw = dict(masks=masks, ground_truth=None, image_shape=image_shape, data_name=os.path.basename(args.data))
    if args.max_samples is not None:
        sl = slice(0, args.max_samples)
        X, y = X[sl], None if y is None else y[sl]
        kw["masks"] = None if kw["masks"] is None else kw["masks"][sl]
        kw["ground_truth"] = None if kw["ground_truth"] is None else kw["ground_truth"][sl]
    from .run import audit

    summary = audit(models, X, y, out=args.out, n_jobs=args.n_jobs, device=args.device, rule=args.rule,
                    epsilon=args.epsilon, n_steps=args.n_steps, region_size=args.region_size,
                    perturbation=args.perturbation, aopc_samples=args.aopc_samples, alpha=args.alpha,
                    probe=args.probe, random_state=args.seed, verbose=verbose, notes=notes, **kw)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for s in summary["models"]:
        st = s.get("strategies")
        flagged = "n/a" if not st else (", ".join(map(str, st["flagged"])) or "none")
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        aopc = s["aopc"]["scores"].get("LRP") if s.get("aopc") else None
        print(f"{s['name']}: accuracy {acc}, flagged classes: {flagged}, AOPC(LRP) "
              f"{'n/a' if aopc is None else format(aopc, '.4g')}")
    print(f"report written to {os.path.join(os.path.abspath(args.out), 'report.html')}")
    return summary
