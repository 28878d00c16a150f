"""Device path of the default codec: dither, subset and quantization on a torch device.

Run: ``python bench/bench_codecs_gpu.py`` (under a minute; on CUDA if present, else
on the CPU through torch). Prints the device, then per rate: whether the message from
the torch tensor is byte-identical to the numpy path's, the encode time of each path
measured in this run (entropy coding stays on the CPU in both) and their ratio, and
the numpy decode time of that message for scale.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from flrd.codecs.message import decode_update, encode_update
from flrd.codecs.rate_curve import noise_for_bits
from flrd.protocol import CompressionRequest

BITS = (0.003, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


def best(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    cuda = torch.cuda.is_available()
    d = 1 << 22 if cuda else 1 << 20  # torch's integer Philox on a CPU is slow: keep the fallback short
    device = "cuda" if cuda else "cpu"
    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name() if cuda else f"CPU through torch (no CUDA), {cpu}"
    print(f"device: {name} | torch {torch.__version__} | numpy {np.__version__} | {os.cpu_count()} CPUs | "
          f"d = 2**{d.bit_length() - 1}")
    x = np.random.default_rng(0).standard_normal(d).astype(np.float32)
    xt = torch.from_numpy(x).to(device)
    print("\n| bit | identical bytes | numpy encode ms | torch encode ms | torch speed / numpy | numpy decode ms |")
    print("|---|---|---|---|---|---|")
    for bits in BITS:
        request = CompressionRequest(codec="dithered", noise_var=(noise_for_bits(bits),), seed=3)
        sent = encode_update({"x": x}, request, node_id=1)
        same = encode_update({"x": xt}, request, node_id=1).payload == sent.payload
        t_np = best(lambda r=request: encode_update({"x": x}, r, node_id=1))
        t_dev = best(lambda r=request: encode_update({"x": xt}, r, node_id=1))
        t_dec = best(lambda r=request, p=sent.payload: decode_update(p, r, node_id=1, layout={"x": (d,)}), 3)
        print(f"| {bits} | {same} | {t_np * 1e3:.1f} | {t_dev * 1e3:.1f} | {t_np / t_dev:.2f} | {t_dec * 1e3:.1f} |")


if __name__ == "__main__":
    main()
