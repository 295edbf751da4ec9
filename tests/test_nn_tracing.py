"""sklrp.nn.tracing: tensor operations in ``forward`` explained as merge points, routing and activations.

Networks written with functional operations (``x + y``, ``torch.cat``, ``F.relu``, ``x.mean``, in-place
``+=``) must give exactly the relevance of the same networks written with modules (``sklrp.nn.Add``,
``Concat``, ``nn.ReLU``, pooling modules), and match a loop reference of Eq. (2.39) on a tiny residual
net. Operations without a decomposition raise, naming the operation and its line.
"""

import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.frozen import FrozenEstimator
from torch import nn

import sklrp
from sklrp.nn import Add, Composite, Concat, TorchModel, fold_batchnorm, lrp, make_composite
from sklrp.nn.canonizers import batchnorm_pairs
from sklrp.nn.tracing import functional_operations
from sklrp.rules import AlphaBeta, Epsilon, Flat, Z, ZPlus

torch.set_num_threads(1)
D = torch.float64
COMPOSITES = {
    "z": Composite(Z()),
    "eps+a2b1": Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0)),
    "eps+z+ flat": Composite(Epsilon(0.01), conv_rule=ZPlus(), flat_depth=2),
}


def close(a, b, rtol=1e-12, atol=1e-13):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- loop reference of Eq. (2.39)
class TinyResidual(nn.Module):
    """x -> a = L1 x -> b = relu(a) -> c = L2 b -> s = c + b (functional) -> relu -> out = L3."""

    def __init__(self, merge=None):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.merge = merge

    def forward(self, x):
        b = torch.relu(self.l1(x))
        c = self.l2(b)
        s = self.merge(c, b) if self.merge is not None else c + b
        return self.l3(F.relu(s))


def z_rule_loop(W, bias, x, R):
    """Eq. (2.13) with the bias' share (Eq. (2.16)), loops over i and j (one sample)."""
    r_in, r_b = np.zeros(len(x)), 0.0
    for j in range(W.shape[0]):
        z = sum(x[i] * W[j, i] for i in range(len(x))) + bias[j]
        if z == 0:
            continue
        for i in range(len(x)):
            r_in[i] += x[i] * W[j, i] / z * R[j]
        r_b += bias[j] / z * R[j]
    return r_in, r_b


def tiny_reference(net, x, k):
    """Loop-based LRP-z of TinyResidual for output k: Eq. (2.39) at the sum, identity at the ReLUs."""
    p = {name: t.detach().numpy() for name, t in net.named_parameters()}
    rs, bs = [], []
    for xn in x.numpy():
        a = p["l1.weight"] @ xn + p["l1.bias"]
        b = np.maximum(a, 0)
        c = p["l2.weight"] @ b + p["l2.bias"]
        s = c + b
        t = np.maximum(s, 0)
        out = p["l3.weight"] @ t + p["l3.bias"]
        R = np.zeros(2)
        R[k] = out[k]
        r_t, rb3 = z_rule_loop(p["l3.weight"], p["l3.bias"], t, R)
        r_s = r_t  # identity through the ReLU (Eq. (2.37))
        r_c = np.array([c[i] / s[i] * r_s[i] if s[i] != 0 else 0.0 for i in range(4)])  # Eq. (2.39)
        r_skip = np.array([b[i] / s[i] * r_s[i] if s[i] != 0 else 0.0 for i in range(4)])
        r_b, rb2 = z_rule_loop(p["l2.weight"], p["l2.bias"], b, r_c)
        r_a = r_b + r_skip  # messages from both uses of b summed (Eq. (2.12))
        r_x, rb1 = z_rule_loop(p["l1.weight"], p["l1.bias"], xn, r_a)
        rs.append(r_x)
        bs.append(rb1 + rb2 + rb3)
    return np.stack(rs), np.array(bs)


def test_functional_sum_matches_loop_reference_of_eq_2_39():
    torch.manual_seed(0)
    net = TinyResidual().to(D)
    x = torch.randn(5, 3, dtype=D)
    res = lrp(net, x, Composite(Z()), target=1)
    ref, ref_bias = tiny_reference(net, x, 1)
    np.testing.assert_allclose(res.relevance.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.bias.numpy(), ref_bias, rtol=1e-10, atol=1e-12)
    # conservation: input relevance + biases = output
    np.testing.assert_allclose(res.relevance.sum(1) + res.bias, res.output, rtol=1e-12, atol=1e-12)


def test_functional_sum_equals_the_add_module():
    torch.manual_seed(0)
    plain, marked = TinyResidual().to(D), TinyResidual(Add()).to(D)
    marked.load_state_dict(plain.state_dict())
    x = torch.randn(5, 3, dtype=D)
    for comp in (Composite(Z()), Composite(Epsilon(0.1)), Composite(AlphaBeta(2.0, -1.0))):
        close(lrp(plain, x, comp).relevance, lrp(marked, x, comp).relevance)


# ----------------------------------------------------------------------------- functional vs module networks
class Block(nn.Module):
    """A residual CNN written with functional operations, or (modules=True) with modules only."""

    def __init__(self, modules=False):
        super().__init__()
        self.modules_only = modules
        self.inp = nn.Conv2d(2, 4, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.side = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(6 * 2 * 2, 3)
        self.relu1, self.relu2, self.tanh = nn.ReLU(), nn.ReLU(), nn.Tanh()
        self.add, self.cat = Add(), Concat(dim=1)
        self.pool, self.flat = nn.MaxPool2d(2), nn.Flatten()

    def forward(self, x):
        if self.modules_only:
            h = self.relu1(self.inp(x))
            h = self.relu2(self.add(self.branch(h), h))
            h = self.cat(h, self.tanh(self.side(h)))
            return self.fc(self.flat(self.pool(h)))
        h = F.relu(self.inp(x))
        h = self.branch(h) + h
        h = h.relu()
        h = torch.cat([h, torch.tanh(self.side(h))], dim=1)
        h = F.max_pool2d(h, 2)
        return self.fc(h.view(h.shape[0], -1))


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_functional_network_equals_module_network(name):
    torch.manual_seed(1)
    functional, modules = Block().to(D), Block(modules=True).to(D)
    modules.load_state_dict(functional.state_dict())
    x = torch.randn(4, 2, 4, 4, dtype=D)
    a, b = lrp(functional, x, COMPOSITES[name]), lrp(modules, x, COMPOSITES[name])
    for field in ("relevance", "bias", "output"):
        close(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("flat", [False, True], ids=["z", "flat"])
@pytest.mark.parametrize("op", ["avg_pool", "adaptive", "mean", "sum", "max_pool", "torch_max_pool"])
def test_functional_pooling_equals_pooling_modules(op, flat):
    """Functional pooling gets its layer's step: z-rule (Section 2.3.1) or flat in the flat region, ties split."""
    functional = {
        "avg_pool": lambda h: F.avg_pool2d(h, 2),
        "adaptive": lambda h: F.adaptive_avg_pool2d(h, 1).flatten(1),
        "mean": lambda h: h.mean((2, 3)),
        "sum": lambda h: torch.sum(h, dim=(2, 3)),
        "max_pool": lambda h: F.max_pool2d(h, kernel_size=2),
        "torch_max_pool": lambda h: torch.max_pool2d(h, 2),
    }[op]
    module = {
        "avg_pool": nn.AvgPool2d(2),
        "adaptive": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        "mean": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        "sum": nn.Sequential(nn.AvgPool2d(4, divisor_override=1), nn.Flatten()),
        "max_pool": nn.MaxPool2d(2),
        "torch_max_pool": nn.MaxPool2d(2),
    }[op]

    class Net(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(1, 3, 3, padding=1), pool, nn.LazyLinear(2)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = self.pool(h) if isinstance(self.pool, nn.Module) else self.pool(h)
            return self.fc(h.flatten(1))

    torch.manual_seed(2)
    x = torch.randn(3, 1, 4, 4, dtype=D).round()  # rounded: ties in the max pooling
    a, b = Net(functional).to(D), Net(module).to(D)
    a(x), b(x)  # materialise the lazy layers
    b.load_state_dict(a.state_dict())
    comp = Composite(Z(), flat_depth=1 if flat else None)
    close(lrp(a, x, comp).relevance, lrp(b, x, comp).relevance)


def test_subtraction_scaling_and_constants_conserve():
    """``x - y`` splits by Eq. (2.39) with signs; ``x + c`` lets the constant absorb its share like a bias;
    scaling by constants passes relevance unchanged."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 4, bias=False), nn.Linear(3, 4, bias=False), nn.Linear(4, 2,
                                                                                                          bias=False)
            self.shift = nn.Parameter(torch.full((4,), 0.5))

        def forward(self, x):
            h = 2.0 * (self.a(x) - self.b(x)) / 3.0
            h = -(-h) + self.shift
            return self.c(torch.relu(h))

    torch.manual_seed(3)
    net = Net().to(D)
    x = torch.randn(6, 3, dtype=D)
    res = lrp(net, x, Composite(Z()))
    close(res.relevance.sum(1) + res.bias, res.output)
    assert res.bias.abs().max() > 1e-3  # the constant shift absorbed relevance
    without = Net().to(D)
    without.load_state_dict(net.state_dict())
    with torch.no_grad():
        without.shift.zero_()
    res0 = lrp(without, x, Composite(Z()))
    close(res0.bias, torch.zeros_like(res0.bias))
    # Eq. (2.39) with signs: the relevance of a - b is a's contribution minus b's, here gradient x input
    xg = x.clone().requires_grad_(True)
    out = without(xg)
    (g,) = torch.autograd.grad((out * F.one_hot(out.argmax(1), 2)).sum(), xg)
    close(res0.relevance, g * x)


def test_broadcast_sum_sums_the_copies():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool_fc = nn.Conv2d(2, 3, 1, bias=False), nn.Linear(2, 3, bias=False)
            self.fc = nn.Linear(3 * 9, 2, bias=False)

        def forward(self, x):
            g = self.pool_fc(x.mean((2, 3)))[:, :, None, None]  # (n, 3, 1, 1), broadcast over positions
            return self.fc(torch.relu(self.conv(x) + g).flatten(1))

    torch.manual_seed(4)
    net = Net().to(D)
    x = torch.rand(3, 2, 3, 3, dtype=D)
    res = lrp(net, x, Composite(Z()))
    close(res.relevance.flatten(1).sum(1), res.output)


# ----------------------------------------------------------------------------- in-place operations
class Inplace(nn.Module):
    def __init__(self, style):
        super().__init__()
        self.style = style
        self.conv1, self.conv2 = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 9, 2)

    def forward(self, x):
        identity = x
        out = self.conv2(F.relu(self.conv1(x)))
        if self.style == "iadd":
            out += identity
            out = F.relu(out, inplace=True)
        elif self.style == "add_":
            out = out.add_(identity).relu_()
        elif self.style == "plain":
            out = F.relu(out + identity)
        elif self.style == "stale":
            F.relu(out, inplace=True)  # relies on the in-place change
        elif self.style == "view":
            out = out.view(out.shape[0], -1)
            out += 1.0
            return self.fc(out)
        return self.fc(out.flatten(1))


@pytest.mark.parametrize("style", ["iadd", "add_"])
def test_in_place_sum_and_activation_equal_out_of_place(style):
    torch.manual_seed(5)
    a, b = Inplace(style).to(D), Inplace("plain").to(D)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2, 3, 3, dtype=D)
    close(lrp(a, x, Composite(Z())).relevance, lrp(b, x, Composite(Z())).relevance)
    with torch.no_grad():
        close(a(x), b(x))  # the network itself is untouched


def test_relying_on_an_in_place_change_is_refused_with_both_lines():
    net = Inplace("stale").to(D)
    with pytest.raises(TypeError, match=r"F\.relu\(out, inplace=True\).*changes an activation in place.*"
                                        r"unchanged tensor is used at .*`return self\.fc\(out\.flatten\(1\)\)`"):
        lrp(net, torch.randn(2, 2, 3, 3, dtype=D), Composite(Z()))


def test_in_place_change_of_a_view_is_refused():
    with pytest.raises(TypeError, match=r"shares its memory.*out \+= 1\.0|out \+= 1\.0.*shares its memory"):
        lrp(Inplace("view").to(D), torch.randn(2, 2, 3, 3, dtype=D), Composite(Z()))


# ----------------------------------------------------------------------------- refusals
class Gated(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)
        self.w = nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        h = self.a(x)
        if self.kind == "product":
            h = h * torch.sigmoid(h)  # gating: a product of two activations
        elif self.kind == "linear":
            return F.linear(h, self.w)
        elif self.kind == "detach":
            h = h.detach() + h
        elif self.kind == "exp":
            h = torch.exp(h)
        elif self.kind == "batch":
            h = h - h.mean(0)
        elif self.kind == "divide":
            h = 1.0 / h
        elif self.kind == "dropout":
            h = F.dropout(h, 0.5)
        return self.b(h)


@pytest.mark.parametrize("kind, match", [
    ("product", r"torch\.Tensor\.mul at .*line \d+, in Gated\.forward: `h = h \* torch\.sigmoid\(h\)  # gating.*`: "
                r"it combines activations multiplicatively.*is the input of the layer Linear at "
                r".*`return self\.b\(h\)`"),
    ("linear", r"torch\.nn\.functional\.linear at .*`return F\.linear\(h, self\.w\)`.*torch\.nn\.Linear"),
    ("detach", r"torch\.Tensor\.detach at .*`h = h\.detach\(\) \+ h`.*cuts the network's graph"),
    ("exp", r"torch\.exp at .*`h = torch\.exp\(h\)`: no LRP decomposition.*is the input of the layer Linear"),
    ("batch", r"torch\.Tensor\.mean at .*reduces over dimension 0, which sklrp takes for the batch"),
    ("divide", r"at .*`h = 1\.0 / h`: no LRP decomposition"),
    ("dropout", r"dropout at .*training=True"),
])
def test_operations_without_decomposition_name_operation_and_line(kind, match):
    net = Gated(kind).to(D)
    before = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()]
    with pytest.raises(TypeError, match=match):
        lrp(net, torch.randn(3, 3, dtype=D), Composite(Epsilon(0.01)))
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()] == before


def test_control_flow_is_followed_as_it_runs():
    """Data-dependent branches (``if h.sum() > 0``) are explained along the path the batch took."""

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            if bool(h.sum() > 0) and bool(h.abs().max() < 1e6):
                h = h + torch.relu(self.b(h))
            for _ in range(2):
                h = torch.relu(h)
            return self.c(h)

    class Straight(Branchy):
        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.c(h + torch.relu(self.b(h)))

    torch.manual_seed(6)
    a, b = Branchy().to(D), Straight().to(D)
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 3, dtype=D)
    assert float(torch.relu(a.a(x)).sum().detach()) > 0
    close(lrp(a, x, Composite(Epsilon(0.01))).relevance, lrp(b, x, Composite(Epsilon(0.01))).relevance)


def test_functional_softmax_and_sigmoid_at_the_end_are_removed():
    torch.manual_seed(7)
    body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).to(D)

    class Soft(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.body, self.fn = body, fn

        def forward(self, x):
            return self.fn(self.body(x))

    x = torch.randn(5, 3, dtype=D)
    ref = lrp(body, x, Composite(Z()))
    for fn in (lambda z: F.softmax(z, dim=1), lambda z: torch.log_softmax(z, 1), torch.sigmoid):
        res = lrp(Soft(fn), x, Composite(Z()))
        close(res.relevance, ref.relevance)
        close(res.scores, ref.scores)
    # the plain forward used for scores (TorchModel.decision_function, AOPC) strips it too
    tm = TorchModel(Soft(lambda z: F.softmax(z, dim=1)), classes=[0, 1, 2]).fit(x.numpy())
    np.testing.assert_allclose(tm.decision_function(x.numpy()), body(x).detach().numpy(), rtol=1e-12)

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(F.softmax(self.body[0](x), dim=1)[:, :3])

    with pytest.raises(ValueError, match="Softmax"):
        lrp(Inner(), x, Composite(Z()))


def test_layers_without_parameters_are_followed_and_unknown_layers_with_parameters_named():
    class Swish(nn.Module):  # no parameters: its forward is followed, and its product refused
        def forward(self, x):
            return x * torch.sigmoid(x)

    class HardRelu(nn.Module):
        def forward(self, x):
            return x.clamp(min=0)

    torch.manual_seed(8)
    x = torch.randn(3, 3, dtype=D)
    good = nn.Sequential(nn.Linear(3, 3), HardRelu(), nn.Linear(3, 2)).to(D)
    ref = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).to(D)
    ref.load_state_dict(good.state_dict())
    close(lrp(good, x, Composite(Z())).relevance, lrp(ref, x, Composite(Z())).relevance)
    with pytest.raises(TypeError, match=r"in Swish\.forward: `return x \* torch\.sigmoid\(x\)`"):
        lrp(nn.Sequential(nn.Linear(3, 3), Swish(), nn.Linear(3, 2)).to(D), x, Composite(Z()))
    with pytest.raises(TypeError, match="cannot explain the layer Embedding"):
        lrp(nn.Sequential(nn.Embedding(4, 3), nn.Flatten(), nn.Linear(6, 2)).to(D), torch.zeros(2, 2, dtype=D),
            Composite(Z()))


def test_lrptransformer_explains_an_unmodified_residual_net():
    torch.manual_seed(9)
    net = Block().to(D)
    X = np.random.RandomState(0).randn(6, 2, 4, 4)
    lrp_ = sklrp.LRPTransformer(FrozenEstimator(TorchModel(net, classes=[0, 1, 2]).fit(X)), composite="epsilon_plus",
                                epsilon=1e-3).fit(X)
    E = lrp_.explain(X)
    res = lrp(net, torch.as_tensor(X), make_composite("epsilon_plus", epsilon=1e-3))
    np.testing.assert_allclose(E.relevance, res.relevance.numpy(), rtol=1e-12, atol=1e-14)


def test_explaining_in_threads_keeps_each_pass_apart():
    torch.manual_seed(10)
    nets = [Block().to(D) for _ in range(2)]
    x = torch.randn(3, 2, 4, 4, dtype=D)
    expected = [lrp(n, x, Composite(Z())).relevance for n in nets]
    results, errors = {}, []

    def run(i):
        try:
            for _ in range(5):
                results[i] = lrp(nets[i], x, Composite(Z())).relevance
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(2):
        close(results[i], expected[i])


def test_functional_operations_are_listed():
    ops = functional_operations()
    assert "torch.cat" in ops["routing (Eq. (2.41))"]
    assert "torch.Tensor.add" in ops["sum (Eq. (2.39))"]
    assert "torch.nn.functional.relu" in ops["identity (Eq. (2.37))"]


# ----------------------------------------------------------------------------- batch-norm folding from the graph
class BNResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.conv2, self.bn2 = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.shared = nn.Conv2d(2, 2, 1)
        self.bn3 = nn.BatchNorm2d(2)  # after a sum: stays (Eq. (2.54))
        self.bn4 = nn.BatchNorm2d(2)  # after a layer that is called twice: stays
        self.fc = nn.Linear(2 * 9, 2)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn3(self.bn2(self.conv2(h)) + x)
        h = self.bn4(self.shared(self.shared(h)))
        return self.fc(F.relu(h).flatten(1))


def _randomise_bn(net):
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(2, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(2, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(2, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(2, generator=g) - 0.5)
    return net.eval()


def test_fold_batchnorm_reads_the_graph():
    torch.manual_seed(11)
    net = _randomise_bn(BNResidual().to(D))
    assert batchnorm_pairs(net) == [("conv1", "bn1"), ("conv2", "bn2")]
    folded = fold_batchnorm(net)
    assert type(folded) is BNResidual
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.bn2, nn.Identity)
    assert isinstance(folded.bn3, nn.BatchNorm2d) and isinstance(folded.bn4, nn.BatchNorm2d)
    assert isinstance(net.bn1, nn.BatchNorm2d)  # the original is untouched
    x = torch.randn(3, 2, 3, 3, dtype=D)
    with torch.no_grad():
        close(folded(x), net(x))
    # with the z-rule, folding changes nothing (Eq. (2.54) is the z-rule of the affine map)
    close(lrp(folded, x, Composite(Z())).relevance, lrp(net, x, Composite(Z())).relevance, rtol=1e-9, atol=1e-11)


def test_fold_batchnorm_of_an_untraceable_net_falls_back_to_sequential_pairs():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
            self.lin, self.bn = nn.Linear(3, 3), nn.BatchNorm1d(3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.lin(self.seq(x)))

    net = Untraceable().eval()
    with pytest.warns(RuntimeWarning, match="cannot trace Untraceable"):
        pairs = batchnorm_pairs(net)
    assert pairs == [("seq.0", "seq.1")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        folded = fold_batchnorm(net)
    assert isinstance(folded.seq[1], nn.Identity) and isinstance(folded.bn, nn.BatchNorm1d)


def test_flat_region_counts_layers_in_forward_order():
    """flat_depth counts linear-type layers as they run; functional pooling between them is flat inside the
    region (Eq. (2.27))."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Linear(2, 2)

        def forward(self, x):
            h = F.avg_pool2d(torch.relu(self.c1(x)), 2)
            return self.fc(torch.relu(self.c2(h)).mean((2, 3)))

    torch.manual_seed(12)
    x = torch.rand(2, 1, 4, 4, dtype=D)
    res = lrp(Net().to(D), x, Composite(Z(), flat_depth=2))
    close(res.relevance.flatten(1).sum(1), res.output - res.bias)
    flat1 = lrp(Net().to(D), x, Composite(Z(), input_rule=Flat()))
    assert not torch.allclose(flat1.relevance, res.relevance)
