"""Engine settings resolved from the CPU: the three kinds of CPU seen, overrides, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.engine import CpuInfo, UnsupportedCpuError, read_cpu, resolve_engine
from scholia.settings import LLMSettings

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 fma avx f16c"
XEON_AMX = CpuInfo(
    "Intel(R) Xeon(R) Platinum 8481C",
    frozenset(f"{BASE} avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16".split()),
    2,
)
EPYC_BF16 = CpuInfo("AMD EPYC 9B14", frozenset(f"{BASE} avx2 avx512f avx512_bf16".split()), 2)
EPYC_AVX2 = CpuInfo("AMD EPYC 7B12", frozenset(f"{BASE} avx2".split()), 2)
OLD = CpuInfo("Intel(R) Xeon(R) E5-2670", frozenset(BASE.split()), 2)


@pytest.mark.parametrize(
    ("cpu", "dtype", "eager"),
    [(XEON_AMX, "bfloat16", False), (EPYC_BF16, "bfloat16", False), (EPYC_AVX2, "float32", True)],
)
def test_auto_follows_the_cpu(cpu: CpuInfo, dtype: str, eager: bool) -> None:
    profile = resolve_engine(LLMSettings(), cpu)
    assert profile.dtype == dtype
    assert profile.enforce_eager is eager
    args = profile.args()
    assert args[args.index("--dtype") + 1] == dtype
    assert ("--enforce-eager" in args) is eager
    assert profile.reasons["dtype"] and profile.reasons["enforce_eager"]


def test_explicit_settings_win_over_the_cpu() -> None:
    settings = LLMSettings(dtype="bfloat16", enforce_eager=False, omp_threads=2)
    profile = resolve_engine(settings, EPYC_AVX2)
    assert (profile.dtype, profile.enforce_eager, profile.omp_threads) == ("bfloat16", False, 2)
    assert "SCHOLIA_LLM_DTYPE" in profile.reasons["dtype"]
    assert resolve_engine(LLMSettings(dtype="float32"), XEON_AMX).dtype == "float32"


def test_threads_leave_a_core_for_the_app_and_pin_vllm() -> None:
    env = resolve_engine(LLMSettings(), EPYC_AVX2).env()
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    big = CpuInfo("AMD EPYC", EPYC_AVX2.flags, 16)
    assert resolve_engine(LLMSettings(), big).env()["VLLM_CPU_OMP_THREADS_BIND"] == "0-14"


def test_the_step_timeout_covers_the_slowest_chunked_prefill() -> None:
    profile = resolve_engine(LLMSettings(max_num_batched_tokens=16384), EPYC_AVX2)
    # 16k tokens in one step at 40 tok/s is 410 s: the timeout must be longer than that.
    assert profile.execute_timeout_s > 16384 / 40
    assert int(profile.env()["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) == profile.execute_timeout_s
    assert resolve_engine(LLMSettings(), EPYC_AVX2).execute_timeout_s >= 300


def test_a_cpu_without_avx2_is_refused_with_a_message() -> None:
    with pytest.raises(UnsupportedCpuError, match=r"neither AVX2 nor AVX-512.*SCHOLIA_LLM_URL"):
        resolve_engine(LLMSettings(), OLD)


def test_read_cpu_parses_proc_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
        f"flags\t\t: {BASE} avx2\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: avx512f\n"
    )
    cpu = read_cpu(info)
    assert cpu.model == "AMD EPYC 7B12"
    assert cpu.isa == "AVX2" and not cpu.has_bf16
    assert cpu.describe()["flags"] == ["avx2", "fma"]
    assert cpu.cores >= 1
    assert read_cpu(tmp_path / "missing").model == "unknown"
