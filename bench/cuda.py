"""edgec's CUDA bench: ``python -m bench.cuda [--device cuda|cpu] [--batches 1,1024,...]``.

For each model below (the small controllers the ``fused`` strategy is for), in one process and on
the same weights and inputs: edgec's fused CUDA build (``edgec.compile(..., target="cuda")``,
torch CUDA tensors passed as device pointers) beside torch eager and torch replayed from a CUDA
graph (and, with ``--torch-compile``, torch.compile where it compiles within the budget),
at each batch size. Each time is the median over ``--repeat`` timed calls after a warm-up,
with the device synchronised around every call, so it includes the launch; samples/s follows.
The max abs difference of edgec's outputs to torch's is printed for every row, so a fast wrong
kernel cannot hide.

``--device cpu`` runs the same harness with edgec's host build of the same ``.cu`` (g++) and torch
on the CPU (no CUDA graph column): it is what machines without a GPU can run, and what the smoke
test (tests/test_bench_cuda.py) checks. Without a visible GPU, ``--device cuda`` stops with one
line saying what is missing.

``--models resnet18`` (included by default with ``--device cuda``) adds the ``layers`` strategy's
rows: ResNet-18 (``--resnet-width`` 64, ``--resnet-res`` 224) at ``--resnet-batches`` (1,64) in
fp32, tf32 and bf16 (``--precisions``), each against torch eager and CUDA graphs at the same
precision (tf32: torch's allow_tf32 switches on; bf16: the torch model and input in bfloat16).
Its error column is relative: max |edgec - torch fp32| / max |torch fp32|.

The batched closed-loop NR tick is measured by ``python -m bench.batch_sim`` (its own bench).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.models import basic_block
from edgec.errors import EdgecError
from edgec.tables import format_table

DEFAULT_BATCHES = (1, 1024, 65536)
DEFAULT_REPEAT = 20


@dataclass(frozen=True)
class CudaBenchModel:
    name: str
    what: str
    build: Callable[[], Any]  # -> torch.nn.Module (eval, float32)
    sample_shape: tuple[int, ...]  # one sample, with the leading 1 the model is exported with


def _mlp() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 2))


def _gru() -> Any:
    import torch
    from torch import nn

    class GruPolicy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(6, 20, batch_first=True)
            self.head = nn.Linear(20, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.rnn(x)
            return self.head(y[:, -1])

    return GruPolicy()


def _cnn() -> Any:
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, 10))


def resnet18(width: int = 64, classes: int = 1000) -> Any:
    """ResNet-18 (torchvision's topology: 7x7/2 stem, 3x3/2 max pool, four stages of two
    BasicBlocks, global average pool, linear), base width ``width`` (64 is ResNet-18 itself;
    the tests use 16 to keep the generated weight tables small). BatchNorm in eval mode."""
    import torch
    from torch import nn

    w = width
    layers: list[nn.Module] = [nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = w
    for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
        layers += [basic_block(cin, cout, 1 if i == 0 else 2), basic_block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    net = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial BatchNorm statistics, as a trained net has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.0, generator=g)
            m.bias.data.uniform_(-0.2, 0.2, generator=g)
    return net.eval()


MODELS = (
    CudaBenchModel("mlp_mpc", "2->32->32->2 tanh (the NR-MPC forward model)", _mlp, (1, 2)),
    CudaBenchModel("gru_policy", "GRU 6->20 over 20 steps + linear head", _gru, (1, 20, 6)),
    CudaBenchModel("cnn_small", "16x16 conv 8, conv 16 /2, linear 10", _cnn, (1, 1, 16, 16)),
)


def _timed(fn: Callable[[], Any], sync: Callable[[], None], repeat: int) -> float:
    """Median seconds per call of ``fn`` (one warm-up call; synchronised around each call)."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _graphed(net: Any, x: Any) -> Callable[[], Any]:
    """``net(x)`` captured once in a CUDA graph and replayed (static input and output)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):  # warm up on a side stream, as torch's CUDA graph docs ask
            net(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = net(x)

    def replay() -> Any:
        graph.replay()
        return out

    return replay


def _compiled(net: Any, device: str) -> Any:
    """``torch.compile`` of ``net``: with CUDA graphs on a GPU (``reduce-overhead``), inductor's
    default on the CPU."""
    import torch

    return torch.compile(net, mode="reduce-overhead" if device == "cuda" else "default")


def bench_model(bm: CudaBenchModel, device: str, batches: Sequence[int], repeat: int,
                seed: int = 0, compile_budget: float | None = None) -> list[list[str]]:
    """One table row per batch size: edgec, torch eager (and torch CUDA graph on a GPU), and
    with ``compile_budget`` (seconds) torch.compile: its first call at each batch size (the
    compilation) is not timed, and once compiling this model has taken longer than the budget
    its remaining cells are "-" (the column is for where torch.compile finishes in time)."""
    import torch

    import edgec

    torch.manual_seed(seed)
    net = bm.build().eval()
    example = torch.randn(*bm.sample_shape)
    cu = edgec.compile(net, example_inputs=(example,), name=bm.name, target="cuda")
    tdev = torch.device("cuda" if device == "cuda" else "cpu")
    net = net.to(tdev)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    compiled = _compiled(net, device) if compile_budget is not None else None
    compile_spent = 0.0
    for b in batches:
        x = torch.randn(b, *bm.sample_shape[1:], generator=torch.Generator().manual_seed(b))
        if device == "cuda":
            x = x.to(tdev)
            edge = cu.run(x)
            t_edge = _timed(lambda x=x: cu.run(x), sync, repeat)
        else:
            xn = x.numpy()
            edge = torch.from_numpy(np.asarray(cu.run(xn, device="cpu")))
            t_edge = _timed(lambda xn=xn: cu.run(xn, device="cpu"), sync, repeat)
        with torch.no_grad():
            want = net(x)
            t_eager = _timed(lambda x=x: net(x), sync, repeat)
        graph = "-"
        if device == "cuda":
            t_graph = _timed(_graphed(net, x), sync, repeat)
            graph = f"{t_graph * 1e3:.4g}"
        comp = "-"
        if compiled is not None and compile_budget is not None and compile_spent <= compile_budget:
            start = time.perf_counter()
            with torch.no_grad():
                got = compiled(x)  # compiles for this shape
                sync()
            compile_spent += time.perf_counter() - start
            c_err = float((got.float().cpu() - want.float().cpu()).abs().max())
            if c_err > 1e-3:
                raise EdgecError(f"torch.compile of {bm.name} differs from eager by {c_err:.2g}")
            if compile_spent <= compile_budget:
                with torch.no_grad():
                    comp = f"{_timed(lambda x=x: compiled(x), sync, repeat) * 1e3:.4g}"
        err = float((edge.reshape(want.shape).float().cpu() - want.float().cpu()).abs().max())
        rows.append([bm.name, f"{b:,}", f"{t_edge * 1e3:.4g}", f"{t_eager * 1e3:.4g}", graph,
                     comp, f"{b / t_edge:,.0f}", f"{err:.1e}"])
    return rows


RESNET = "resnet18"
RESNET_PRECISIONS = ("fp32", "tf32", "bf16")


def bench_resnet(device: str, batches: Sequence[int], repeat: int, precisions: Sequence[str],
                 width: int = 64, res: int = 224, seed: int = 0) -> list[list[str]]:
    """Rows of ResNet-18 through strategy layers, one per precision and batch size."""
    import copy

    import torch

    import edgec

    torch.manual_seed(seed)
    net = resnet18(width)
    example = torch.randn(1, 3, res, res)
    tdev = torch.device("cuda" if device == "cuda" else "cpu")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    for p in precisions:
        cu = edgec.compile(net, example_inputs=(example,), name=f"resnet18_{p}", target="cuda",
                           options={"cuda": "layers", "precision": p})
        tf32 = p == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        tnet = copy.deepcopy(net).to(tdev)
        dtype = torch.bfloat16 if p == "bf16" else torch.float32
        tnet = tnet.to(dtype)
        for b in batches:
            x = torch.randn(b, 3, res, res, generator=torch.Generator().manual_seed(b))
            with torch.no_grad():
                want = net(x)  # fp32 on the CPU: the reference for every precision
            xd = x.to(tdev)
            xt = xd.to(dtype)
            if device == "cuda":
                edge = cu.run(xd).float().cpu()
                t_edge = _timed(lambda xd=xd, cu=cu: cu.run(xd), sync, repeat)
            else:
                xn = x.numpy()
                edge = torch.from_numpy(np.asarray(cu.run(xn, device="cpu")))
                t_edge = _timed(lambda xn=xn, cu=cu: cu.run(xn, device="cpu"), sync, repeat)
            with torch.no_grad():
                t_eager = _timed(lambda xt=xt, tnet=tnet: tnet(xt), sync, repeat)
                graph = "-"
                if device == "cuda":
                    graph = f"{_timed(_graphed(tnet, xt), sync, repeat) * 1e3:.4g}"
            err = float((edge.reshape(want.shape) - want).abs().max() / want.abs().max())
            rows.append([f"{RESNET}/{p}", f"{b:,}", f"{t_edge * 1e3:.4g}", f"{t_eager * 1e3:.4g}",
                         graph, "-", f"{b / t_edge:,.0f}", f"{err:.1e}"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return rows


HEADERS = ("model", "batch", "edgec ms", "torch eager ms", "torch CUDA graph ms",
           "torch.compile ms", "edgec samples/s", "max abs err")


def run(device: str, batches: Sequence[int], repeat: int, names: Sequence[str] | None = None,
        log: Callable[[str], None] = print, compile_budget: float | None = None,
        resnet: dict[str, Any] | None = None) -> str:
    """The bench as a table (``device`` "cuda" needs nvcc and a visible GPU). ``resnet``:
    keyword arguments of :func:`bench_resnet` (batches, precisions, width, res)."""
    if device == "cuda":
        from edgec.backend.cuda.build import find_nvcc, require_gpu

        find_nvcc()
        require_gpu()
    chosen = [m for m in MODELS if names is None or m.name in names]
    unknown = set(names or ()) - {m.name for m in MODELS} - {RESNET}
    if unknown:
        raise EdgecError(f"--models: unknown {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(m.name for m in MODELS)}, {RESNET}")
    rows = []
    for bm in chosen:
        log(f"bench.cuda: {bm.name} ({bm.what}) on {device}")
        rows += bench_model(bm, device, batches, repeat, compile_budget=compile_budget)
    if (RESNET in names) if names is not None else device == "cuda":
        kw = {"batches": (1, 64), "precisions": RESNET_PRECISIONS, **(resnet or {})}
        log(f"bench.cuda: {RESNET} (strategy layers: {', '.join(kw['precisions'])}) on {device}")
        rows += bench_resnet(device, repeat=repeat, **kw)
    return format_table(list(HEADERS), rows, align="lrrrrrrr")


def _machine(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return (f"{torch.cuda.get_device_name()}; torch {torch.__version__} "
                f"(CUDA {torch.version.cuda}); Python {platform.python_version()}")
    return f"{platform.processor() or platform.machine()}; torch {torch.__version__} (CPU)"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cuda", description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda: the GPU build vs torch on the GPU; cpu: the host build of the "
                    "same .cu vs torch on the CPU")
    ap.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)),
                    help="comma-separated batch sizes")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="timed calls per cell")
    ap.add_argument("--models", help=f"comma-separated subset of: "
                    f"{', '.join(m.name for m in MODELS)}, {RESNET} (default: all; {RESNET} "
                    "only with --device cuda)")
    ap.add_argument("--resnet-batches", default="1,64", help="batch sizes of the resnet18 rows")
    ap.add_argument("--precisions", default=",".join(RESNET_PRECISIONS),
                    help="precisions of the resnet18 rows (strategy layers)")
    ap.add_argument("--resnet-width", type=int, default=64,
                    help="ResNet-18 base width (64: ResNet-18 itself)")
    ap.add_argument("--resnet-res", type=int, default=224, help="ResNet-18 input resolution")
    ap.add_argument("--torch-compile", type=float, nargs="?", const=300.0, default=None,
                    metavar="SECONDS", help="add a torch.compile column (reduce-overhead on a "
                    "GPU); a model's cells stop once compiling it took longer than SECONDS "
                    "(default 300)")
    args = ap.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
        if not batches or min(batches) < 1 or args.repeat < 1:
            raise EdgecError("--batches needs positive sizes and --repeat at least 1")
        names = args.models.split(",") if args.models else None
        resnet = {"batches": [int(b) for b in args.resnet_batches.split(",") if b],
                  "precisions": [p for p in args.precisions.split(",") if p],
                  "width": args.resnet_width, "res": args.resnet_res}
        bad = set(resnet["precisions"]) - set(RESNET_PRECISIONS)  # type: ignore[arg-type]
        if bad or not resnet["batches"] or min(resnet["batches"]) < 1:  # type: ignore[type-var]
            raise EdgecError(f"--precisions: choose from {', '.join(RESNET_PRECISIONS)}; "
                             "--resnet-batches needs positive sizes")
        table = run(args.device, batches, args.repeat, names,
                    log=lambda s: print(s, file=sys.stderr), compile_budget=args.torch_compile,
                    resnet=resnet)
    except (EdgecError, ValueError) as exc:
        print(f"bench.cuda: {exc}", file=sys.stderr)
        return 2
    print(table)
    print(f"- {_machine(args.device)}; median of {args.repeat} synchronised calls per cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
