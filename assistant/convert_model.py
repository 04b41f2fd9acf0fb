"""Convert a GGUF chat model into a bf16 safetensors folder that vLLM (0.32, CPU) can serve.

Standalone: it runs under the vLLM environment's Python (`.venv-vllm`), which has transformers,
torch, gguf and accelerate, and imports nothing from the `assistant` package:

    .venv-vllm/bin/python assistant/convert_model.py --gguf FILE.gguf --out DIR

The folder is written next to DIR under a temporary name and renamed into place only when
complete, so an interrupted conversion never leaves a half-written DIR behind.
"""

from __future__ import annotations

import os
import sys

# Run as a script, its own folder (the `assistant` package) heads sys.path: keep its modules
# from shadowing the libraries imported below. (os and sys are loaded before any script runs.)
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != _HERE]

import argparse  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def convert(gguf: Path, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # Imported here, after the environment above is set.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf.resolve()
    out = out.resolve()
    if out.exists():
        raise SystemExit(f"convert_model: {out} already exists; remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        start = time.monotonic()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
        )
        print(f"convert_model: loaded {gguf.name} in {time.monotonic() - start:.0f} s", flush=True)
        # transformers 5 marks a GGUF-loaded model as quantized and refuses to save it;
        # the weights are already dequantized, so drop the quantizer before saving.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if not getattr(tokenizer, "chat_template", None):
            raise SystemExit(f"convert_model: {gguf.name} carries no chat template")
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(str(tmp))
        for fh in tmp.iterdir():
            fh.chmod(0o644)
            _fsync(fh)
        tmp.chmod(0o755)
        os.replace(tmp, out)
        _fsync(out.parent)
        print(f"convert_model: wrote {out} in {time.monotonic() - start:.0f} s", flush=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # works for folders too, on Linux
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True, help="the GGUF file to convert")
    parser.add_argument("--out", type=Path, required=True, help="the folder to create")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the partial folder is removed (SIGKILL leaves it behind:
    # model_prep clears stale `.NAME.partial-*` folders before converting again).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not args.gguf.is_file():
        parser.error(f"no such file: {args.gguf}")
    convert(args.gguf, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
