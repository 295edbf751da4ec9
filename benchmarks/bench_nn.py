"""Per-batch time of sklrp's torch LRP vs a plain input gradient and vs zennit.

Model: a VGG-like CNN (conv-conv-pool blocks, two dense layers). Composite: the
thesis' recommendation (Section 5.4.1): epsilon = 0.01 on dense layers, alpha = 2,
beta = -1 on convolutions -- zennit's ``EpsilonAlpha2Beta1``. Runs on CUDA when
available (float32), else on the CPU. Goals (issue 4): sklrp <= 1.5x the gradient
and <= 1.0x zennit. zennit is optional (``make compare`` installs it in
``.venv-peers``); without it only the gradient baseline is timed.

The first lines print the FLOP floor of each composite relative to the gradient
(:func:`flop_ratios`): epsilon LRP needs exactly the gradient's products (1.0x);
alpha-beta needs one more forward product and two transposed ones per convolution
(2.02x for this net), so no exact implementation of a2b1 can reach 1.5x.
On CUDA it also times :class:`sklrp.nn.GraphedLRP` (the same explanation replayed from
CUDA graphs) and the gradient recorded as a CUDA graph. Measured figures and what limits
them: doc/benchmarks.rst.

With zennit installed (``make compare``) it also times every named composite of
:data:`sklrp.nn.COMPOSITES` against the zennit composite it reproduces (goal <= 1.0x) and
prints their agreement in float64 (``max |R_sklrp - R_zennit| / max |R_zennit|``, zennit's
stabiliser set to 1e-30); with torchvision, it does the same on an unmodified torchvision
``resnet18`` (random weights; sklrp follows its ``x + identity`` and folds its batch norms
with :func:`sklrp.nn.fold_batchnorm`, zennit uses its ``ResNetCanonizer``), and times the
same ResNet written with :class:`sklrp.nn.Add` modules to show what following the
functional operations costs.

Usage::

    python benchmarks/bench_nn.py            # 3x64x64 inputs, batch 16
    python benchmarks/bench_nn.py --quick    # 3x32x32, batch 8 (a few seconds)
    python benchmarks/bench_nn.py --batch 128 --size 128   # a GPU-sized workload
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from sklrp.nn import COMPOSITES, Add, Composite, GraphedLRP, fold_batchnorm, lrp, make_composite
from sklrp.rules import AlphaBeta, Epsilon


def vgg_like(width=32, n_classes=10, size=64):
    def block(cin, cout, n):
        layers = []
        for i in range(n):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU()]
        return layers + [nn.MaxPool2d(2)]

    feats = block(3, width, 2) + block(width, 2 * width, 2) + block(2 * width, 4 * width, 3)
    side = size // 8
    return nn.Sequential(*feats, nn.Flatten(), nn.Linear(4 * width * side * side, 256), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(256, n_classes)).eval()


def flop_ratios(model, x):
    """FLOP floor of LRP relative to the input gradient, from the multiply-adds of the layers.

    The gradient costs each conv/dense layer's forward product ``F`` and one transposed
    product (also ``F``): ``2 F``. Epsilon LRP needs exactly the same products (Eq. (2.61):
    the modified gradient only rescales by ``z_j``), so its floor is 1.0. Alpha-beta needs
    ``z+`` (one more forward, ``z- = z - z+``) and the transposed products with ``w+`` and
    ``w-`` (two): ``4 F``; an input layer whose inputs take both signs needs ``z+`` from
    ``x+ w+ + x- w-`` (two forwards) and four transposed products: ``7 F``. Returns the
    floors of (epsilon, the eps + a2b1 composite) as multiples of the gradient.
    """
    layers = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            layers.append(("conv", output.numel() * fan_in, bool((inputs[0] < 0).any())))
        elif isinstance(module, nn.Linear):
            layers.append(("dense", output.numel() * module.in_features, False))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    grad = sum(2 * f for _, f, _ in layers)
    a2b1 = sum(2 * f if kind == "dense" else (7 if mixed else 4) * f for kind, f, mixed in layers)
    return 1.0, a2b1 / grad


def cuda_graph(fn, warmup=3):
    """``fn`` (no arguments, fixed inputs) recorded as a CUDA graph; the replay returns its output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    return replay


def timeit(fns, repeats, device):
    """Median seconds per call of each function; rounds are interleaved so that load
    changes on a shared machine hit all contenders alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default 16; --quick 8)")
    parser.add_argument("--size", type=int, default=None, help="image side, a multiple of 8 (default 64; --quick 32)")
    args = parser.parse_args(argv)
    size, batch, repeats = (32, 8, 5) if args.quick else (64, 16, 10)
    size, batch, repeats = args.size or size, args.batch or batch, args.repeats or repeats
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = vgg_like(size=size).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        weights = torch.nn.functional.one_hot(model(x).argmax(1), 10).float()
    composite = Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0))

    def gradient():
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xg), xg, weights)
        return g * x

    def sklrp_lrp():
        return lrp(model, x, composite, target=weights).relevance

    eps_only = Composite(Epsilon(0.01))
    fns = {"gradient": gradient, "sklrp": sklrp_lrp,
           "sklrp_eps": lambda: lrp(model, x, eps_only, target=weights).relevance}
    if device.type == "cuda":
        # replayed from CUDA graphs: sklrp's GraphedLRP (copy in, replay, checks, copies out), and
        # the gradient recorded the same way, so that both sides of the ratio may use graphs
        graphed, graphed_eps = GraphedLRP(model, composite), GraphedLRP(model, eps_only)
        fns["sklrp_graph"] = lambda: graphed(x, weights).relevance
        fns["sklrp_eps_graph"] = lambda: graphed_eps(x, weights).relevance
        fns["gradient_graph"] = cuda_graph(gradient)
    try:
        from zennit.attribution import Gradient
        from zennit.composites import (
            EpsilonAlpha2Beta1,
            LayerMapComposite,
            layer_map_base,
        )
        from zennit.rules import Epsilon as ZEpsilon
        from zennit.types import Linear as ZLinear
    except ImportError:
        Gradient = None

    if Gradient is not None:
        def zennit_run(composite_fn):
            def run():
                with Gradient(model=model, composite=composite_fn()) as attributor:
                    _, rel = attributor(x, lambda out: out * weights)
                return rel
            return run

        zennit_lrp = zennit_run(lambda: EpsilonAlpha2Beta1(epsilon=0.01, stabilizer=1e-30))
        fns["zennit"] = zennit_lrp
        fns["zennit_eps"] = zennit_run(lambda: LayerMapComposite(layer_map_base(1e-30) + [(ZLinear, ZEpsilon(0.01))]))

    floor_eps, floor_a2b1 = flop_ratios(model, x)
    print(f"device={device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"threads={torch.get_num_threads()}, input={tuple(x.shape)}, float32, repeats={repeats}")
    print(f"FLOP floor vs gradient (multiply-adds of the conv/dense products): epsilon {floor_eps:.2f}, "
          f"eps+a2b1 {floor_a2b1:.2f} (a2b1: one more forward and two transposed products per conv)")
    t = timeit(fns, repeats, device)
    print(f"gradient x input        : {1e3 * t['gradient']:8.1f} ms/batch")
    print(f"sklrp eps+a2b1 (thesis) : {1e3 * t['sklrp']:8.1f} ms/batch   sklrp/gradient = "
          f"{t['sklrp'] / t['gradient']:.2f} (goal <= 1.5; FLOP floor {floor_a2b1:.2f})")
    print(f"sklrp epsilon only      : {1e3 * t['sklrp_eps']:8.1f} ms/batch   sklrp/gradient = "
          f"{t['sklrp_eps'] / t['gradient']:.2f} (goal <= 1.5)")
    if device.type == "cuda":
        g, gg = t["gradient"], t["gradient_graph"]
        print(f"gradient x input (graph): {1e3 * gg:8.1f} ms/batch")
        for key, label in (("sklrp_graph", "eps+a2b1"), ("sklrp_eps_graph", "epsilon ")):
            print(f"sklrp {label} (GraphedLRP): {1e3 * t[key]:8.1f} ms/batch   sklrp/gradient = {t[key] / g:.2f} "
                  f"(goal <= 1.5), vs the graphed gradient {t[key] / gg:.2f}")
    if Gradient is None:
        print("zennit not installed: run `make compare` for the zennit comparison")
        return
    print(f"zennit eps+a2b1         : {1e3 * t['zennit']:8.1f} ms/batch   sklrp/zennit   = "
          f"{t['sklrp'] / t['zennit']:.2f} (goal <= 1.0)")
    print(f"zennit epsilon only     : {1e3 * t['zennit_eps']:8.1f} ms/batch   sklrp/zennit   = "
          f"{t['sklrp_eps'] / t['zennit_eps']:.2f} (goal <= 1.0)")
    r_ours, r_zen = sklrp_lrp(), zennit_lrp()
    diff = (r_ours - r_zen).abs().max().item()
    print(f"max |R_sklrp - R_zennit| float32 = {diff:.3e} (relative to max |R|: {diff / r_zen.abs().max().item():.2e})")
    m64, x64, w64 = copy.deepcopy(model).double(), x.double(), weights.double()
    with Gradient(model=m64, composite=EpsilonAlpha2Beta1(epsilon=0.01, stabilizer=1e-30)) as attributor:
        _, z64 = attributor(x64, lambda out: out * w64)
    o64 = lrp(m64, x64, composite, target=w64).relevance
    d64 = (o64 - z64).abs().max().item()
    print(f"max |R_sklrp - R_zennit| float64 = {d64:.3e} (relative to max |R|: {d64 / z64.abs().max().item():.2e})")
    named_composites(model, x, weights, repeats, device)
    try:
        import torchvision
    except ImportError:
        print("torchvision not installed: no ResNet comparison")
        return
    resnet(torchvision, args.quick, repeats, device)


def zennit_composite(name, low=None, high=None, canonizers=None, epsilon=0.01):
    """The zennit composite that sklrp's named composite ``name`` reproduces (stabiliser 1e-30: exact rules)."""
    from zennit import composites

    cls = getattr(composites, COMPOSITES[name])
    kw = {"epsilon": epsilon, "stabilizer": 1e-30, "canonizers": canonizers}
    if name == "epsilon_gamma_box":
        kw.update(low=low, high=high, gamma=0.25)
    return cls(**kw)


def zennit_relevance(model, x, weights, composite):
    from zennit.attribution import Gradient

    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x, lambda out: out * weights)
    return rel


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def named_composites(model, x, weights, repeats, device, epsilon=0.01):
    """Every named composite against the zennit composite it reproduces: time ratio and float64 agreement."""
    low, high = float(x.min()), float(x.max())
    fns = {}
    for name in COMPOSITES:
        ours = make_composite(name, epsilon=epsilon, low=low, high=high)
        fns["sklrp " + name] = lambda ours=ours: lrp(model, x, ours, target=weights).relevance
        fns["zennit " + name] = lambda name=name: zennit_relevance(
            model, x, weights, zennit_composite(name, low, high, epsilon=epsilon))
    t = timeit(fns, repeats, device)
    m64, x64, w64 = copy.deepcopy(model).double(), x.double(), weights.double()
    print("named composites (sklrp.nn.COMPOSITES) vs zennit, same input; agreement in float64:")
    for name in COMPOSITES:
        ours, theirs = t["sklrp " + name], t["zennit " + name]
        agreement = relative(lrp(m64, x64, make_composite(name, epsilon=epsilon, low=low, high=high), target=w64)
                             .relevance, zennit_relevance(m64, x64, w64, zennit_composite(name, low, high,
                                                                                           epsilon=epsilon)))
        print(f"  {name:26s}: sklrp {1e3 * ours:7.1f} ms, zennit {1e3 * theirs:7.1f} ms, sklrp/zennit = "
              f"{ours / theirs:.2f} (goal <= 1.0); max |dR| / max |R| = {agreement:.1e}")


def resnet(torchvision, quick, repeats, device):
    """An unmodified torchvision resnet18: sklrp follows its ``x + identity``; zennit needs ResNetCanonizer."""
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics; eps tiny (zennit's merged batch norm keeps it)
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.eps = 1e-12
    net = net.eval().to(device)
    batch, size = (4, 64) if quick else (16, 112)
    x = torch.rand(batch, 3, size, size, device=device)
    with torch.no_grad():
        weights = torch.nn.functional.one_hot(net(x).argmax(1), 10).float()
    folded = fold_batchnorm(net)
    marked = copy.deepcopy(folded)  # the same network written with sklrp.nn.Add modules

    def block_forward(self, h):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(h)))))
        return self.relu(self.merge(out, h if self.downsample is None else self.downsample(h)))

    for block in marked.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.merge = Add()
            block.forward = block_forward.__get__(block)
    names = ("epsilon_plus_flat", "epsilon_gamma_box")
    fns = {}
    for name in names:
        ours = make_composite(name, epsilon=1e-6, low=0.0, high=1.0)
        fns["sklrp " + name] = lambda ours=ours: lrp(folded, x, ours, target=weights).relevance
        fns["add " + name] = lambda ours=ours: lrp(marked, x, ours, target=weights).relevance
        fns["zennit " + name] = lambda name=name: zennit_relevance(
            net, x, weights, zennit_composite(name, 0.0, 1.0, [ResNetCanonizer()], epsilon=1e-6))
    t = timeit(fns, repeats, device)
    n64, x64, w64 = copy.deepcopy(net).double(), x.double(), weights.double()
    f64 = fold_batchnorm(n64)  # folded in float64, as zennit merges the float64 copy
    print(f"unmodified torchvision resnet18, input {tuple(x.shape)}, epsilon 1e-6 (zennit: ResNetCanonizer):")
    for name in names:
        ours, add, theirs = t["sklrp " + name], t["add " + name], t["zennit " + name]
        agreement = relative(lrp(f64, x64, make_composite(name, epsilon=1e-6, low=0.0, high=1.0), target=w64)
                             .relevance, zennit_relevance(n64, x64, w64, zennit_composite(
                                 name, 0.0, 1.0, [ResNetCanonizer()], epsilon=1e-6)))
        print(f"  {name:26s}: sklrp {1e3 * ours:7.1f} ms (written with sklrp.nn.Add: {1e3 * add:7.1f} ms), "
              f"zennit {1e3 * theirs:7.1f} ms, sklrp/zennit = {ours / theirs:.2f} (goal <= 1.0); "
              f"float64 max |dR| / max |R| = {agreement:.1e}")


if __name__ == "__main__":
    main()
