"""Quantizing a ≈1B-parameter Llama: convert time and memory, pt2e_quant vs torchao.

Run from the repository root::

    .venv/bin/python benchmarks/bench_llm.py              # 2, 4, 8, 16 layers (≈1.24B), ~15 min
    .venv/bin/python benchmarks/bench_llm.py --quick      # a narrow 2-layer model, seconds

The model is transformers' ``LlamaForCausalLM`` built from a Llama-3.2-1B-shaped config with
random weights (nothing is downloaded): hidden 2048, MLP 8192, 32 heads, 8 key/value heads,
vocabulary 128256, embedding tied to the lm_head, float32. ``--layers`` scales the decoder, so
time can be read against parameter count.

Every measurement runs in a fresh process (one library, one configuration), so one
library's allocator state and caches cannot flatter or penalise the other. Each process
builds and exports the model, then prepares, calibrates and converts it, reporting

* ``prepare`` / ``calib`` / ``convert``: wall seconds (calibration per batch);
* ``+prep`` / ``+calib``: resident memory added by prepare and by calibration (a pipeline that
  copied a weight would show it here);
* ``+conv``: the peak resident memory during convert over the resident memory just before it,
  from ``resource.getrusage`` after resetting the kernel's high-water mark
  (``/proc/self/clear_refs``), compared with the bytes of the integer weights convert stores.

A last table times prepare + convert of the zoo's Llama-style decoder at 4-32 layers per
graph node (ours, 8da4w): constant per-node time means the pipeline grows linearly.

Configurations: ``dyn8`` (int8 per-token-or-tensor dynamic activations and int8 per-channel
weights, XNNPACK's ``get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)``,
which both libraries run, through ExecuTorch's XNNPACKQuantizer for the peer) and, ours only
because the peer has no PT2E quantizer for it, ``8da4w`` (per-token activations, int4 weights in
groups of 32).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("pt2e_quant", "torchao")
CONFIGS = ("dyn8", "8da4w")
FULL_LAYERS = (2, 4, 8, 16)
SEQUENCE = 32
CALIBRATION_BATCHES = 2


def _llama(layers: int, quick: bool) -> torch.nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    width = dict(hidden_size=128, intermediate_size=256, vocab_size=1024) if quick else {}
    config = transformers.LlamaConfig(
        **{"hidden_size": 2048, "intermediate_size": 8192, "vocab_size": 128256, **width},
        num_hidden_layers=layers,
        num_attention_heads=32 if not quick else 4,
        num_key_value_heads=8 if not quick else 2,
        head_dim=64 if not quick else 32,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        use_cache=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


class _Logits(torch.nn.Module):
    """The causal LM as ``ids -> logits``, without a cache, so export sees one plain graph."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def _quantizer(library: str, config: str):
    if library == "pt2e_quant":
        from quantizers import (
            XNNPACKQuantizer,
            get_per_token_quantization_config,
            get_symmetric_quantization_config,
        )

        if config == "8da4w":
            chosen = get_per_token_quantization_config(weight_bits=4, group_size=32)
        else:
            chosen = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
        return XNNPACKQuantizer().set_global(chosen)
    if config != "dyn8":
        raise SystemExit(f"torchao has no PT2E quantizer for {config}")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer

    class PeerWithoutScalarLifting(peer.XNNPACKQuantizer):
        """The peer's quantizer lifts every scalar operand to a float tensor before annotating,
        so the mask code's ``arange(n) + 0`` becomes a float index and its calibration crashes
        (IndexError). Its dynamic config annotates linears and convolutions only, which the
        lifting does not touch, so skipping it leaves the peer's quantization unchanged."""

        def transform_for_annotation(self, model):
            return model

    chosen = peer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    return PeerWithoutScalarLifting().set_global(chosen)


def _pipeline(library: str):
    if library == "pt2e_quant":
        import pt2e_quant

        return pt2e_quant.prepare_pt2e, pt2e_quant.convert_pt2e
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    return prepare_pt2e, convert_pt2e


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _reset_peak() -> None:
    """Start a new high-water mark (Linux >= 4.0), so ``ru_maxrss`` measures from now."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _integer_weight_bytes(converted: torch.nn.Module) -> int:
    tensors = {id(t): t for t in converted.state_dict(keep_vars=True).values()}
    tensors.update({id(t): t for t in vars(converted).values() if isinstance(t, torch.Tensor)})
    return sum(
        t.numel() * t.element_size()
        for t in tensors.values()
        if not t.is_floating_point() and t.numel() > 1024
    )


def measure(library: str, config: str, layers: int, quick: bool) -> dict:
    """One library's pipeline on one model, in this process."""
    torch.manual_seed(0)
    model = _Logits(_llama(layers, quick))
    parameters = sum(p.numel() for p in model.parameters())
    vocab = model.model.config.vocab_size
    example = (torch.randint(0, vocab, (1, SEQUENCE)),)
    batches = [torch.randint(0, vocab, (1, SEQUENCE)) for _ in range(CALIBRATION_BATCHES)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, example, strict=False).module()
        prepare, convert = _pipeline(library)
        quantizer = _quantizer(library, config)
        gc.collect()
        before = _rss()
        start = time.perf_counter()
        prepared = prepare(exported, quantizer)
        prepare_s = time.perf_counter() - start
        gc.collect()
        after_prepare = _rss()
        start = time.perf_counter()
        for batch in batches:
            prepared(batch)
        calibration_s = (time.perf_counter() - start) / len(batches)
        gc.collect()
        after_calibration = _rss()
        _reset_peak()
        start = time.perf_counter()
        converted = convert(prepared)
        convert_s = time.perf_counter() - start
        convert_peak = _peak() - after_calibration
        reference = model(example[0])
        quantized = converted(example[0])
    error = (quantized - reference).norm() / reference.norm()
    return {
        "library": library,
        "config": config,
        "layers": layers,
        "parameters": parameters,
        "prepare_s": prepare_s,
        "calibration_s": calibration_s,
        "convert_s": convert_s,
        "prepare_rss": after_prepare - before,
        "calibration_rss": after_calibration - after_prepare,
        "convert_peak": convert_peak,
        "integer_weight_bytes": _integer_weight_bytes(converted),
        "relative_error": float(error),
    }


def _in_fresh_process(library: str, config: str, layers: int, quick: bool) -> dict | str:
    command = [sys.executable, __file__, "--worker", library, config, str(layers)]
    if quick:
        command.append("--quick")
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return (result.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(lines[-1])


def _gb(value: int) -> str:
    return f"{value / 1e9:+.3f}"


def _row(r: dict) -> str:
    return (
        f"{r['config']:6} {r['layers']:3d} {r['parameters'] / 1e9:6.3f}B  {r['library']:10} "
        f"{r['prepare_s']:7.2f} {r['calibration_s']:7.2f} {r['convert_s']:8.2f} "
        f"{_gb(r['prepare_rss']):>7} {_gb(r['calibration_rss']):>7} {_gb(r['convert_peak']):>7} "
        f"{r['integer_weight_bytes'] / 1e9:6.3f} {r['relative_error']:8.4f}"
    )


GROWTH_LAYERS = (4, 8, 16, 32)


def growth(layers_list: tuple[int, ...], repeats: int = 3) -> None:
    """prepare + convert time per graph node of the zoo's Llama-style decoder (8da4w, ours):
    constant when the pipeline is linear in the node count."""
    sys.path.insert(0, str(ROOT))
    import pt2e_quant
    from tests.models.zoo_decoder import LlamaStyleDecoder

    print("\ngrowth (tests/models/zoo_decoder.py, 8da4w): layers  nodes  prepare+convert  per node")
    for layers in layers_list:
        model = LlamaStyleDecoder(layers=layers).eval()
        example = model.example_inputs()
        times, nodes = [], 0
        for _ in range(repeats):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exported = torch.export.export(model, example).module()
            nodes = len(exported.graph.nodes)
            quantizer = _quantizer("pt2e_quant", "8da4w")
            gc.collect()
            start = time.perf_counter()
            prepared = pt2e_quant.prepare_pt2e(exported, quantizer)
            prepared(*example)
            pt2e_quant.convert_pt2e(prepared)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"{'':44}{layers:6d} {nodes:6d} {best:14.3f}s {best / nodes * 1e6:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a narrow 2-layer model")
    parser.add_argument("--layers", type=int, nargs="*", help=f"default {FULL_LAYERS}")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--worker", nargs=3, metavar=("LIBRARY", "CONFIG", "LAYERS"))
    parser.add_argument("--skip-growth", action="store_true", help="no node-count growth table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.worker:
        library, config, layers = args.worker
        print(json.dumps(measure(library, config, int(layers), args.quick)), flush=True)
        return
    layers_list = args.layers or ((2,) if args.quick else FULL_LAYERS)
    print(
        "config layers params  library    prepare  calib/b  convert   +prep  +calib   +conv "
        "intW(GB) rel.err"
    )
    for config in args.configs:
        for layers in layers_list:
            results = {}
            for library in LIBRARIES:
                if library == "torchao" and config != "dyn8":
                    continue
                result = _in_fresh_process(library, config, layers, args.quick)
                if isinstance(result, str):
                    print(f"skipped {library} {config} {layers} layers: {result}")
                    continue
                results[library] = result
                print(_row(result), flush=True)
            if len(results) == 2:
                ours, peer = results["pt2e_quant"], results["torchao"]
                print(
                    f"{'':6} {layers:3d} ratio ours/torchao: convert time "
                    f"{ours['convert_s'] / peer['convert_s']:.3f}, convert peak memory "
                    f"{ours['convert_peak'] / max(peer['convert_peak'], 1):.3f}"
                )
    if not args.skip_growth:
        growth((2, 4) if args.quick else GROWTH_LAYERS, 1 if args.quick else 3)


if __name__ == "__main__":
    main()
