"""Which precision this CPU runs fast: bfloat16 in hardware or emulated. Hub-safe (torch only): the pipeline's copy
on the Hub imports it too."""

import os

import torch

# "0" or "1" overrides what this CPU is taken to be, so either precision path runs on any machine (README, tests).
NATIVE_BF16_ENV = "HF_MTL_NATIVE_BF16"


def cpu_has_native_bf16() -> bool:
    """
    Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX). Without it bf16 is emulated and many times
    slower than float32, so the pipeline's bf16 default and `bf16: true` training follow this answer.
    `HF_MTL_NATIVE_BF16=0` / `=1` overrides it, to run the other kind of CPU's precision path on any machine.
    """
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{NATIVE_BF16_ENV}={forced!r}: use 0 (behave as a CPU without native bf16) or 1 (with it)")
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


