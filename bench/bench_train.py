"""Training throughput of DepthSeg models (images/s) at 256x256, CPU and CUDA.

Times the real training step of :mod:`depthseg.trainer` - uint8 batch to the device,
conversion + augmentation + label quantization there (:func:`depthseg.data.prepare_batch`),
forward, loss, backward, gradient clipping, AdamW step - on synthetic uint8 batches held in
memory (no store I/O). AMP (bf16/fp16) and channels_last are on for CUDA, as in training.

    .venv/bin/python bench/bench_train.py                       # pspnet + deeplabv3plus, CPU (+ CUDA)
    .venv/bin/python bench/bench_train.py --devices cuda --batch-size 64 --steps 30
"""

from __future__ import annotations

import argparse
import time

import torch

from depthseg.augment import AugmentConfig
from depthseg.data import prepare_batch
from depthseg.losses import build_loss
from depthseg.models import build_model
from depthseg.trainer import train_step


def bench(arch: str, encoder: str, device: torch.device, batch_size: int, steps: int, warmup: int,
          size: int, label_size: int, amp: bool) -> float:
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = build_model(arch, encoder, label_size=label_size, in_size=size).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    loss_fn = build_loss("ce").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp and not torch.cuda.is_bf16_supported())
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8),
        "depth": torch.randint(0, 256, (batch_size, size, size), dtype=torch.uint8),
        "is_live": torch.ones(batch_size, dtype=torch.bool),
        "index": torch.arange(batch_size),
    }
    if cuda:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    aug = AugmentConfig()

    def step() -> None:
        b = prepare_batch(batch, device, input_size=size, label_size=label_size, num_classes=8,
                          augment=aug, generator=g, channels_last=cuda)
        train_step(model, b, loss_fn, opt, None, scaler, amp=amp and cuda, grad_clip=5.0)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="pspnet,deeplabv3plus")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when absent")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 4 CPU, 30 CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 1 CPU, 5 CUDA)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--label-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-amp", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
          f"CUDA {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    for dev_name in args.devices.split(","):
        device = torch.device(dev_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        cuda = device.type == "cuda"
        bs = args.batch_size or (64 if cuda else 8)
        steps = args.steps or (30 if cuda else 4)
        warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
        for arch in args.archs.split(","):
            ips = bench(arch, args.encoder, device, bs, steps, warmup, args.size, args.label_size,
                        amp=not args.no_amp)
            print(f"{dev_name:5s} {arch:14s} {args.encoder} {args.size}x{args.size} batch {bs:3d} "
                  f"amp={'on' if cuda and not args.no_amp else 'off'}: {ips:8.1f} train images/s")


if __name__ == "__main__":
    main()
