"""The vLLM engine settings for the CPU this process runs on.

Machines differ: a Xeon with AMX, an EPYC with AVX512-BF16 and an EPYC with AVX2 only were all
seen running Scholia. bf16 matrix products are emulated on a CPU without bf16 instructions
(7× slower than fp32 there), so every choice below is resolved from the CPU's flags unless the
setting names it. `resolve_engine` is pure (the CPU is an argument), so each kind is testable.

Measured on 2-core VMs (figures and method in docs/performance.md):
- dtype: AVX2-only EPYC, (512×896)·(896×4864) on one thread: bf16 6 GFLOP/s, fp32 41 GFLOP/s;
  on CPUs with avx512_bf16/amx_bf16, bf16 halves the bytes read per token and is native.
- compile vs eager: on the bf16 CPUs compiled decode was ~20 % faster for ~70 s more start. On
  the AVX2-only EPYC in fp32 (busy machine) compiled was ~15 % faster (decode 2.3 vs 1.9 tok/s,
  first token of a 724-token prompt 10.9 vs 13.8 s) but its first start compiled for 11 min
  (eager: 5 min on the same busy machine, 96 s idle): the start-time goal rules it out there.
- threads: vLLM's engine process busy-polls (sched_yield) the shared-memory queue of its worker
  while a step runs; with both cores computing, decode halved (the poller and the second OMP
  thread fight for a core). So the model computes on all cores but one, and the engine loop and
  the app (embedding, retrieval, verification) share the last one. Running the model inside the
  engine process instead (VLLM_ENABLE_V1_MULTIPROCESSING=0, executor `uni`) measured slower.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from scholia.settings import LLMSettings

Dtype = Literal["bfloat16", "float32"]
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags worth showing in logs and /ready (what the choices depend on, and AVX-512 for context).
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
# vLLM's step timeout must exceed one step; a step is at most `max_num_batched_tokens` of
# prefill (chunked), so it is bounded by the slowest prefill rate seen (AVX2 fp32: ~56 tok/s).
SLOWEST_PREFILL_TOKENS_S = 40.0
MIN_EXECUTE_TIMEOUT_S = 300


class UnsupportedCpuError(RuntimeError):
    """The CPU cannot run vLLM's CPU kernels."""


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def has_bf16(self) -> bool:
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def isa(self) -> str:
        """The widest vector ISA vLLM's CPU ops are built for: AVX512, AVX2, or none."""
        if "avx512f" in self.flags:
            return "AVX512"
        if "avx2" in self.flags:
            return "AVX2"
        return "none"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cores": self.cores,
            "isa": self.isa,
            "bf16_instructions": self.has_bf16,
            "flags": [flag for flag in SHOWN_FLAGS if flag in self.flags],
        }


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU's model name and flags (first processor), and the cores this process may use."""
    model, flags = "unknown", frozenset[str]()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return CpuInfo(model, flags, cores)


@dataclass(frozen=True)
class EngineProfile:
    """Every engine choice for one CPU, and why it was made."""

    cpu: CpuInfo
    dtype: Dtype
    enforce_eager: bool
    omp_threads: int
    max_num_batched_tokens: int
    execute_timeout_s: int
    kv_cache_gib: int
    reasons: dict[str, str] = field(default_factory=dict)

    def args(self) -> list[str]:
        """vLLM server arguments for these choices."""
        args = [
            "--dtype",
            self.dtype,
            "--max-num-batched-tokens",
            str(self.max_num_batched_tokens),
        ]
        if self.enforce_eager:
            args.append("--enforce-eager")
        return args

    def env(self) -> dict[str, str]:
        """vLLM's environment for these choices."""
        last = self.omp_threads - 1
        return {
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
            "VLLM_CPU_OMP_THREADS_BIND": "0" if last == 0 else f"0-{last}",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": str(max(self.cpu.cores - self.omp_threads, 0)),
            "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": str(self.execute_timeout_s),
        }

    def describe(self) -> dict[str, Any]:
        choices = asdict(self)
        choices["cpu"] = self.cpu.describe()
        return choices


def resolve_engine(llm: LLMSettings, cpu: CpuInfo) -> EngineProfile:
    """The engine settings for `cpu`: explicit settings win, `auto`/unset ones follow the CPU."""
    if cpu.isa == "none":
        raise UnsupportedCpuError(
            f"this CPU ({cpu.model}) has neither AVX2 nor AVX-512, which vLLM's CPU kernels "
            "need; serve the model on another machine and set SCHOLIA_LLM_URL to it"
        )
    reasons: dict[str, str] = {}
    if llm.dtype != "auto":
        dtype: Dtype = llm.dtype
        reasons["dtype"] = "set by SCHOLIA_LLM_DTYPE"
    elif cpu.has_bf16:
        dtype = "bfloat16"
        reasons["dtype"] = "the CPU has bf16 instructions (avx512_bf16/amx_bf16)"
    else:
        dtype = "float32"
        reasons["dtype"] = "no bf16 instructions: bf16 would be emulated, ~7x slower than fp32"
    if llm.enforce_eager is not None:
        eager = llm.enforce_eager
        reasons["enforce_eager"] = "set by SCHOLIA_LLM_ENFORCE_EAGER"
    elif dtype == "bfloat16" and cpu.isa == "AVX512":
        eager = False
        reasons["enforce_eager"] = "compiled decode measured ~20% faster on AVX-512 bf16"
    else:
        eager = True
        reasons["enforce_eager"] = (
            "compiled was ~15% faster here but its first start took 11 min (eager: minutes less)"
        )
    threads = llm.omp_threads or max(cpu.cores - 1, 1)
    reasons["omp_threads"] = (
        "set by SCHOLIA_LLM_OMP_THREADS"
        if llm.omp_threads
        else "one core left for the app (retrieval, embedding, verification) and the engine loop"
    )
    batched = llm.max_num_batched_tokens
    timeout = max(MIN_EXECUTE_TIMEOUT_S, int(3 * batched / SLOWEST_PREFILL_TOKENS_S))
    reasons["execute_timeout_s"] = (
        f"3x one {batched}-token prefill step at {SLOWEST_PREFILL_TOKENS_S:g} tok/s, at least "
        f"{MIN_EXECUTE_TIMEOUT_S} s: a long prompt is prefilled in chunks, never in one step"
    )
    reasons["kv_cache_gib"] = (
        "SCHOLIA_LLM_KV_CACHE_GIB: 1 GiB holds ~43k tokens of the 0.5B model in float32 (24 KiB "
        "a token), all 8 sequences of 4,096 tokens; twice that in bfloat16"
    )
    return EngineProfile(
        cpu=cpu,
        dtype=dtype,
        enforce_eager=eager,
        omp_threads=threads,
        max_num_batched_tokens=batched,
        execute_timeout_s=timeout,
        kv_cache_gib=llm.kv_cache_gib,
        reasons=reasons,
    )
