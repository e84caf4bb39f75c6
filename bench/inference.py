"""Benchmark: the default model on ONNX Runtime versus PyTorch eager, and the pixel pipeline.

In one run, on this machine:

1. The default detector at batch 1 and 8: ONNX Runtime (CPU provider, the
   shipped ONNX file) against the same network in PyTorch eager mode on the
   CPU, with the same number of threads. Prints images/s and the ratio
   (goal: ONNX Runtime >= 2x PyTorch). "ORT+decode" adds the numpy box decoding
   and MedRegA text writing that a worker does (``OnnxDetector.generate``).
2. The pixel pipeline alone for one image of a 2k x 2k JPEG 2000 CR
   (``RG1_J2KI.dcm``): ``engine.pixels.prepare_image`` against plain pydicom
   decoding (``dcmread`` + ``pixel_array``); goal: overhead <= 1.2x.
3. On a machine with an NVIDIA GPU and TensorRT: the TensorRT FP16 engine
   (``engine.backends.tensorrt_backend``) against PyTorch eager on CUDA.

PyTorch runs the architecture of ``engine.default_model.network`` with the
trained weights when ``--weights`` points at them (``weights.pt`` from
training), otherwise with the ImageNet backbone and an untrained head: the
arithmetic, and so the speed, is the same.

Run it::

    .venv/bin/python bench/inference.py [--threads 2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


def measure(
    fn: Callable[[], object], *, seconds: float, min_runs: int = 5, warmup: int = 2
) -> float:
    """Median seconds per call of ``fn`` over at least ``min_runs`` calls and ``seconds`` wall."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_interleaved(
    fns: list[Callable[[], object]], *, seconds: float, min_runs: int = 5, warmup: int = 2
) -> list[float]:
    """Median seconds per call of each of ``fns``, calling them in turn.

    Interleaving makes every runtime see the same background load (the CPU of
    a shared machine is rarely quiet), so their ratio stays meaningful.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    started = time.perf_counter()
    while len(times[0]) < min_runs or time.perf_counter() - started < seconds * len(fns):
        for fn, bucket in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    return [statistics.median(bucket) for bucket in times]


def torch_model(weights: Path | None, device: str = "cpu"):
    import torch

    from engine.default_model.network import (
        CenterNetDetector,
        InferenceWrapper,
        load_imagenet_backbone,
    )

    net = CenterNetDetector()
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        load_imagenet_backbone(net.backbone)
    return InferenceWrapper(net).eval().to(device)


def bench_cpu(args: argparse.Namespace, progress) -> list[tuple[str, int, float]]:
    import torch

    from engine.backends.onnxruntime_backend import OnnxDetector
    from engine.default_model import INPUT_SIZE
    from engine.model import GenerationRequest

    torch.set_num_threads(args.threads)
    width, height = INPUT_SIZE
    detector = OnnxDetector(intra_op_threads=args.threads).load()
    session = detector._ensure_session()
    net = torch_model(args.weights)
    rng = np.random.default_rng(0)
    rows = []
    task = progress.add_task("CPU: ORT vs PyTorch", total=2 * 3)
    for batch in (1, 8):
        x = rng.random((batch, 3, height, width), dtype=np.float32)
        requests = [
            GenerationRequest(np.ascontiguousarray(x[i].transpose(1, 2, 0)), "grounded_report")
            for i in range(batch)
        ]
        xt = torch.from_numpy(x)

        def run_torch(xt: torch.Tensor = xt) -> None:
            with torch.inference_mode():
                net(xt)

        t_ort, t_gen, t_torch = measure_interleaved(
            [
                lambda x=x: session.run(None, {"images": x}),
                lambda requests=requests: detector.generate(requests),
                run_torch,
            ],
            seconds=args.seconds,
        )
        progress.advance(task, 3)
        rows += [
            ("ONNX Runtime CPU", batch, batch / t_ort),
            ("ORT+decode+text", batch, batch / t_gen),
            ("PyTorch eager CPU", batch, batch / t_torch),
        ]
    return rows


def bench_pixels(args: argparse.Namespace, progress) -> tuple[float, float]:
    import pydicom

    from engine.default_model import INPUT_SIZE
    from engine.pixels import prepare_image

    path = SHARED / "dicom" / "RG1_J2KI.dcm"
    task = progress.add_task("pixel pipeline (RG1_J2KI.dcm)", total=2)

    def plain() -> None:
        ds = pydicom.dcmread(path)
        ds.pixel_array  # noqa: B018 - decoding is the point

    def pipeline() -> None:
        ds = pydicom.dcmread(path)
        prepare_image(ds, size=INPUT_SIZE)

    t_plain, t_pipe = measure_interleaved([plain, pipeline], seconds=args.seconds, warmup=1)
    progress.advance(task, 2)
    return t_plain, t_pipe


def bench_gpu(args: argparse.Namespace, progress) -> list[tuple[str, int, float]] | str:
    try:
        import torch
    except ModuleNotFoundError:
        return "torch not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        from engine.backends.tensorrt_backend import TensorRTDetector, import_tensorrt

        import_tensorrt()
    except Exception as exc:  # noqa: BLE001 - any import/runtime failure just skips the GPU part, with the reason
        return f"TensorRT not usable: {exc}"
    from engine.default_model import INPUT_SIZE
    from engine.model import GenerationRequest

    width, height = INPUT_SIZE
    net = torch_model(args.weights, "cuda")
    trt = TensorRTDetector(cache_dir=args.trt_cache, precision="fp16", max_batch_size=8).load()
    session = trt._ensure_session()
    rows = []
    task = progress.add_task("GPU: TensorRT FP16 vs PyTorch", total=2 * 3)
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        x = rng.random((batch, 3, height, width), dtype=np.float32)
        requests = [
            GenerationRequest(np.ascontiguousarray(x[i].transpose(1, 2, 0)), "grounded_report")
            for i in range(batch)
        ]
        t_trt = measure(lambda x=x: session.run(None, {"images": x}), seconds=args.seconds)
        progress.advance(task)
        xt = torch.from_numpy(x).cuda()

        def run(half: bool, xt: torch.Tensor = xt) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
                net(xt)
            torch.cuda.synchronize()

        t_fp32 = measure(lambda: run(False), seconds=args.seconds)
        progress.advance(task)
        t_fp16 = measure(lambda: run(True), seconds=args.seconds)
        progress.advance(task)
        del requests
        rows += [
            ("TensorRT FP16 (host I/O)", batch, batch / t_trt),
            ("PyTorch CUDA fp32", batch, batch / t_fp32),
            ("PyTorch CUDA autocast fp16", batch, batch / t_fp16),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads for both runtimes"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="minimum timing per measurement")
    parser.add_argument(
        "--weights", type=Path, default=None, help="trained weights.pt for the PyTorch side"
    )
    parser.add_argument("--trt-cache", type=Path, default=Path("/tmp/radground-trt-cache"))
    parser.add_argument("--skip-pixels", action="store_true")
    args = parser.parse_args()

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    with Progress(console=console, transient=True) as progress:
        cpu = bench_cpu(args, progress)
        pixels = None if args.skip_pixels else bench_pixels(args, progress)
        gpu = bench_gpu(args, progress)

    table = Table(title=f"default model, CPU, {args.threads} thread(s)")
    for column in ("runtime", "batch", "images/s", "vs PyTorch eager"):
        table.add_column(column)
    by_batch = {b: ips for name, b, ips in cpu if name == "PyTorch eager CPU"}
    for name, batch, ips in cpu:
        table.add_row(name, str(batch), f"{ips:.1f}", f"{ips / by_batch[batch]:.2f}x")
    console.print(table)
    for batch in (1, 8):
        ort = next(ips for name, b, ips in cpu if name == "ONNX Runtime CPU" and b == batch)
        verdict = "meets" if ort / by_batch[batch] >= 2 else "misses"
        console.print(
            f"batch {batch}: ONNX Runtime / PyTorch eager = "
            f"{ort / by_batch[batch]:.2f}x ({verdict} the 2x goal)"
        )
    if pixels is not None:
        t_plain, t_pipe = pixels
        console.print(
            f"pixel pipeline RG1_J2KI.dcm: pydicom decode {1000 * t_plain:.0f} ms, "
            f"prepare_image {1000 * t_pipe:.0f} ms per image: {t_pipe / t_plain:.2f}x "
            f"({'meets' if t_pipe / t_plain <= 1.2 else 'misses'} the 1.2x goal)"
        )
    if isinstance(gpu, str):
        console.print(f"GPU comparison skipped: {gpu}")
    else:
        table = Table(title="default model, GPU")
        for column in ("runtime", "batch", "images/s", "vs PyTorch CUDA fp32"):
            table.add_column(column)
        ref = {b: ips for name, b, ips in gpu if name == "PyTorch CUDA fp32"}
        for name, batch, ips in gpu:
            table.add_row(name, str(batch), f"{ips:.1f}", f"{ips / ref[batch]:.2f}x")
        console.print(table)


if __name__ == "__main__":
    main()
