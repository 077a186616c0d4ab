"""ONNX Runtime int8: dynamic and static (QDQ) quantisation with `onnxruntime.quantization`.

Variants (the gate keeps the fastest that passes):

- `dynamic`: int8 per-channel weights, activations quantised per call (uint8), MatMul/Gemm with
  constant weights only, so attention's activation-by-activation products stay float.
- `static-<calib>`: QDQ, int8 per-channel weights, uint8 activations (u8s8: what x86 VNNI
  kernels want), ranges calibrated once on training images (MinMax / Percentile / Entropy) and
  cached, so the sensitivity search re-uses them. MatMul/Gemm/Conv only: quantising every op of
  a ViT (Softmax, LayerNorm, GELU, residual Adds) wrecks it (`static-all` below shows it).
- `static-all-<calib>`: every op ORT can quantise. Opt-in (`quantize.variants`): the deliberately
  sensitive configuration the fallback exists for.
- `mixed-<calib>`: static QDQ int8 for the convolutions (the hybrid's conv stem: QLinearConv, with
  calibrated ranges; the first conv, which reads the image, stays float) and dynamic int8 for
  MatMul/Gemm/Attention: at batch 1 on a hybrid ViT this was
  the fastest ONNX Runtime int8 (dynamic alone leaves the stem's convs in float; static alone leaves
  the fused Attention in float, QDQ having no Attention).
- `+fused`: the same after the transformer fusion (`vitedge.export.onnx.transformer_fusion`: each
  block's attention -> one com.microsoft Attention node, which dynamic quantisation makes QAttention;
  bias+GELU -> BiasGelu): ~185 -> ~65 nodes on a 4-block hybrid, and at batch 1 the per-node cost is
  what int8 cannot shrink.

Each passing candidate is timed with ORT's default session and with `NO_SKIP_LAYERNORM` (the
SkipLayerNormalization fusion ORT applies at session start is slower on small widths); the faster
setting is recorded in meta.json `ort_session`, which `vitedge.runtimes` applies.

Units for the fallback are found in the graph itself: in a pre-norm ViT every block has two
LayerNorms, and a node belongs to the segment after the last norm that precedes it (any
topological order keeps a block's nodes between its norms), so node -> `blocks.i.attn` etc.
needs no names from the exporter.

`TensorRTBackend` is the explicitly quantised ONNX that TensorRT fuses: Q/DQ in front of
MatMul/Gemm/Conv inputs only, symmetric int8 activations and per-channel weights (zero points
0), plain ONNX ops (no ORT fusion). NVIDIA Model Optimizer (`nvidia-modelopt[onnx]`) would be
the first choice, but it pins onnxruntime-gpu 1.24 and onnx 1.21, which would replace this
environment's onnxruntime/onnx; so the same placement is made with ORT's QDQ quantiser.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from vitedge.batching import batches
from vitedge.bench import available_cores
from vitedge.export.onnx import export_onnx, optimize_onnx
from vitedge.export.tensorrt import DEFAULT_PROFILE, TIMING_CACHE, build_engine
from vitedge.hosts import host_engine_key, tensorrt_available
from vitedge.io import atomic_path
from vitedge.ort_session import NO_SKIP_LAYERNORM, open_session, predictor
from vitedge.quantize.core import Backend, Candidate, copy_file, timing

log = logging.getLogger("vitedge.quantize")

NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
            "SkipSimplifiedLayerNormalization")
GEMM_OPS = ["MatMul", "Gemm", "Conv"]
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention"]  # Attention: the fused op, when the optimiser made one


def _calibrate_method(name: str):
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


class _Reader:
    """CalibrationDataReader over preprocessed images, in small batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 32):
        self.batches = [{input_name: part} for part in batches(x, batch)]
        self.i = 0

    def get_next(self) -> dict | None:
        self.i += 1
        return self.batches[self.i - 1] if self.i <= len(self.batches) else None

    def rewind(self) -> None:
        self.i = 0

    def __len__(self) -> int:
        return len(self.batches)


def node_units(proto, depth: int) -> dict[str, str]:
    """ONNX node name -> unit (`patch_embed`, `blocks.i.attn|mlp`, `head`), by LayerNorm position.

    Falls back to one unit per quantisable node when the norms do not count 2 * depth + 1.
    """
    norms = [n for n in proto.graph.node if n.op_type in NORM_OPS]
    if len(norms) != 2 * depth + 1:
        log.warning("found %d norms, expected %d: the fallback works node by node", len(norms), 2 * depth + 1)
        return {n.name: n.name for n in proto.graph.node if n.op_type in GEMM_OPS}
    units, k = {}, -1
    for n in proto.graph.node:
        if n.op_type in NORM_OPS:
            k += 1
        units[n.name] = ("patch_embed" if k < 0 else "head" if k == 2 * depth
                         else f"blocks.{k // 2}.{'attn' if k % 2 == 0 else 'mlp'}")
    return units


def session(path: str | Path, threads: int, settings: dict | None = None):
    """x -> logits through an ORT CPU session of `path` with the given session settings."""
    return predictor(open_session(path, threads, settings))


class OnnxBackend(Backend):
    fmt = "onnx"
    fusion_allowed = True
    fusion: dict = {}  # what the transformer optimiser fused, when it did

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)

        fp32 = export_onnx(self.model, self.work / "fp32.onnx", self.info)
        # symbolic shape inference trips over the dynamo exporter's graphs; ONNX shape inference suffices
        self.graphs = {"": self.work / "plain.onnx"}
        quant_pre_process(str(fp32), str(self.graphs[""]), skip_symbolic_shape=True)
        _drop_initializer_shapes(self.graphs[""])
        if self.cfg.optimize != "off" and self.fusion_allowed:
            fused = copy_file(self.graphs[""], self.work / "fused.onnx")
            record = optimize_onnx(fused, self.info["config"], mode="on")
            if record["applied"]:
                self.graphs["+fused"] = fused
                self.fusion = record["fused"]
            if self.cfg.optimize == "on" and "+fused" in self.graphs:
                del self.graphs[""]
        self.fp32_path = fp32
        self.metadata = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
        depth = self.info["config"]["depth"]
        protos = {g: onnx.load(str(p)) for g, p in self.graphs.items()}
        self.units_of = {g: node_units(proto, depth) for g, proto in protos.items()}
        # convs that read the image itself: one input channel, and int8 would halve the pixels' resolution
        self.input_convs = {g: [n.name for n in proto.graph.node if n.op_type == "Conv"
                                and n.input[0] in {i.name for i in proto.graph.input}] for g, proto in protos.items()}
        self.threads = self.cfg.threads or available_cores()
        self.n_builds = 0
        self.settings: dict[Path, dict | None] = {}  # model file -> the ORT session settings it ran fastest with

    # ------------------------------------------------------------------ variants
    def variants(self) -> list[str]:
        if self.cfg.variants:
            return list(self.cfg.variants)
        kinds = {"auto": ["dynamic", "static", "mixed"], "dynamic": ["dynamic"], "static": ["static"]}[self.cfg.method]
        names = ["dynamic" if k == "dynamic" else f"{k}-{self.cfg.calibrate_method}" for k in kinds]
        return [n + g for n in names for g in self.graphs]

    def _parse(self, variant: str) -> tuple[str, str, str | None]:
        """'static-all-entropy+fused' -> (kind 'static-all', graph '+fused', calib 'entropy')."""
        base, _, fused = variant.partition("+")
        graph = "+" + fused if fused else ""
        if graph not in self.graphs:
            raise ValueError(f"variant '{variant}': graph '{graph or 'plain'}' is not available "
                             f"(optimize={self.cfg.optimize}; the optimiser fused {self.fusion or 'nothing'})")
        if base == "dynamic":
            return "dynamic", graph, None
        for kind in ("static-all", "static-trt", "static", "mixed"):
            if base.startswith(kind + "-") or base == kind:
                calib = base[len(kind) + 1:] or self.cfg.calibrate_method
                return kind, graph, calib
        raise ValueError(f"unknown ONNX int8 variant '{variant}' (dynamic | static-<calib> | static-all-<calib> | "
                         "mixed-<calib>, optionally +fused)")

    def units(self, variant: str) -> list[str]:
        _, graph, _ = self._parse(variant)
        return list(dict.fromkeys(self.units_of[graph].values()))

    def nodes(self, variant: str, units: tuple[str, ...]) -> list[str]:
        _, graph, _ = self._parse(variant)
        return [n for n, u in self.units_of[graph].items() if u in set(units)]

    # ------------------------------------------------------------------ build
    def build(self, variant: str, exclude: tuple[str, ...]) -> Candidate:
        path = self.quantize(variant, exclude, self.work / f"q{self.n_builds}.onnx")
        self.n_builds += 1
        return Candidate(variant, tuple(exclude), session(path, self.threads), payload=path)

    def quantize(self, variant: str, exclude: tuple[str, ...], out: Path) -> Path:
        kind, graph, calib = self._parse(variant)
        src = self.graphs[graph]
        skip = [n for n, u in self.units_of[graph].items() if u in set(exclude)]
        if kind == "dynamic":
            quantize_dynamic(str(src), str(out), op_types_to_quantize=DYNAMIC_OPS, per_channel=True,
                             weight_type=QuantType.QInt8, nodes_to_exclude=skip,
                             extra_options={"MatMulConstBOnly": True})
            return out
        ops, act, options = self.static_options(kind)
        # ranges are calibrated once per (graph, op set, method) and cached for the fallback's rebuilds
        cache = self.work / f"calib{graph}-{kind}-{calib}.json"
        static_out = out.with_name(out.stem + "-conv.onnx") if kind == "mixed" else out
        static_skip = skip + self.input_convs[graph] if kind == "mixed" else skip
        quantize_static(str(src), str(static_out), _Reader(self.calib, "input"), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops, per_channel=True, activation_type=act,
                        weight_type=QuantType.QInt8, nodes_to_exclude=static_skip,
                        calibrate_method=_calibrate_method(calib or self.cfg.calibrate_method), calibration_cache_path=cache,
                        extra_options=options)
        if kind == "mixed":  # then the matmuls (and fused Attention) dynamically, node names unchanged by QDQ
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # "check if the model is already quantized": it is, on purpose (the convs)
            try:
                quantize_dynamic(str(static_out), str(out), op_types_to_quantize=DYNAMIC_OPS, per_channel=True,
                                 weight_type=QuantType.QInt8, nodes_to_exclude=skip,
                                 extra_options={"MatMulConstBOnly": True})
            finally:
                root.setLevel(level)
        return out

    def static_options(self, kind: str) -> tuple[list[str] | None, Any, dict]:
        # u8 activations / s8 weights: the combination x86 int8 kernels (VNNI, AMX) run natively
        if kind == "mixed":
            return ["Conv"], QuantType.QUInt8, {}
        return (None if kind == "static-all" else GEMM_OPS), QuantType.QUInt8, {}

    # ------------------------------------------------------------------ speed and saving
    def _fastest_session(self, path: Path):
        """`path` under ORT's default session and under NO_SKIP_LAYERNORM: the faster at batch 1 (remembered
        for meta.json)."""
        options = [(settings, session(path, self.threads, settings)) for settings in (None, NO_SKIP_LAYERNORM)]
        timed = [(timing(predict, self.calib[:8], self.cfg)["bs1_ms"], i) for i, (_, predict) in enumerate(options)]
        settings, predict = options[min(timed)[1]]
        self.settings[Path(path)] = settings
        return predict, min(timed)[0]

    def fast(self, cand: Candidate):
        return self._fastest_session(cand.payload)[0]

    def reference(self):
        """The fastest fp32 graph (as exported, or transformer-fused; either session setting): int8 must
        beat the best fp32 in the same runtime."""
        options = [self._fastest_session(p) for p in (self.fp32_path, self.graphs.get("+fused")) if p is not None]
        return min(options, key=lambda o: o[1])[0]

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        self._write(cand.payload, art_dir / "model.onnx")
        extras: dict[str, Any] = {"opset": _opset(art_dir / "model.onnx")}
        if self.settings.get(Path(cand.payload)):
            extras["ort_session"] = self.settings[Path(cand.payload)]
        return "model.onnx", extras

    def _write(self, src: Path, dest: Path) -> None:
        """Copy with the fp32 file's vitedge metadata (classes, preprocess ...), precision int8."""
        proto = onnx.load(str(src))
        del proto.metadata_props[:]
        for k, v in {**self.metadata, "vitedge.precision": "int8"}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        with atomic_path(dest, suffix=".onnx") as tmp:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)

    def describe(self, variant: str) -> dict[str, Any]:
        if not variant:
            return {}

        kind, graph, calib = self._parse(variant)
        d: dict[str, Any] = {"quantiser": f"onnxruntime.quantization {onnxruntime.__version__}", "weights": "int8 per-channel",
             "graph": "ORT transformer-optimised (" + ", ".join(f"{k} x{v}" for k, v in self.fusion.items()) + ")"
             if graph else "exported graph after quant_pre_process"}
        if kind == "dynamic":
            d.update(kind="dynamic", activations="uint8, quantised per call", ops=DYNAMIC_OPS,
                     note="MatMul with constant weights only (MatMulConstBOnly)")
        elif kind == "mixed":
            d.update(kind="static QDQ Conv + dynamic MatMul/Gemm/Attention",
                     activations=f"Conv: uint8 calibrated ({calib}); the rest: uint8 quantised per call",
                     ops=["Conv (static)", *DYNAMIC_OPS],
                     always_float=[f"{n} (reads the image: 1 input channel, measured: int8 there cost 0.5 points "
                                   "of agreement and no time)" for n in self.input_convs[graph]])
        else:
            ops, act, options = self.static_options(kind)
            d.update(kind="static QDQ", activations=f"{'int8 symmetric' if options.get('ActivationSymmetric') else 'uint8'}"
                     f", calibrated ({calib})", ops=ops or "all ORT-quantisable ops", extra_options=options)
        d["run_with"] = "onnxruntime CPUExecutionProvider (any ORT build)"
        return d


class TensorRTBackend(OnnxBackend):
    """Q/DQ ONNX for TensorRT's explicit quantisation; the engine is built only on a GPU host with TensorRT."""

    fmt = "tensorrt"
    fusion_allowed = False  # TensorRT parses standard ONNX only (no com.microsoft fused ops)

    def variants(self) -> list[str]:
        return list(self.cfg.variants) or [f"static-trt-{self.cfg.calibrate_method}"]

    def static_options(self, kind: str) -> tuple[list[str] | None, Any, dict]:
        # TensorRT: int8 symmetric (zero point 0) activations and weights, Q/DQ on GEMM inputs only,
        # one Q/DQ pair per consumer so each fusion sees its own (as Model Optimizer places them)
        # inputs only (TensorRT requantises GEMM outputs itself where the next layer wants int8), and
        # biases stay float: TensorRT adds them in the GEMM epilogue and has no int32 DequantizeLinear
        return GEMM_OPS, QuantType.QInt8, {"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "DedicatedQDQPair": True, "QuantizeBias": False,
                                           "OpTypesToExcludeOutputQuantization": GEMM_OPS}

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        self._write(cand.payload, art_dir / "model.onnx")
        extras: dict[str, Any] = {"onnx": "model.onnx", "opset": _opset(art_dir / "model.onnx")}
        file_name = "model.onnx"

        ok, why = tensorrt_available() if self.cfg.build_engine else (False, "disabled (quantize.build_engine: false)")
        if ok:
            engine = build_engine(art_dir / "model.onnx", art_dir, "int8", DEFAULT_PROFILE, art_dir / TIMING_CACHE,
                                  int8_qdq=True)
            lo, opt, hi = DEFAULT_PROFILE
            file_name = engine.name
            extras.update(engine_key=host_engine_key(), profile={"min": lo, "opt": opt, "max": hi}, max_batch=hi,
                          timing_cache=TIMING_CACHE)
        else:
            extras["engine"] = {"skipped": why, "build_on_gpu": "vitedge.export.tensorrt.ensure_engine(ARTEFACT_DIR)"}
        return file_name, extras

    # the engine is judged on the GPU (validate stage); here the Q/DQ graph is gated with ORT's CPU kernels
    runs_here = False

    def describe(self, variant: str) -> dict[str, Any]:
        d = super().describe(variant) if variant else {}
        d.update(placement="Q/DQ on MatMul/Gemm/Conv inputs (TensorRT explicit quantisation)",
                 evaluated_with="the Q/DQ ONNX on ONNX Runtime CPU (same quantisation grid as TensorRT; "
                                "engine kernels may round differently: re-validate the engine on the GPU)",
                 modelopt="not used: nvidia-modelopt[onnx] requires onnxruntime-gpu~=1.24 and onnx 1.21, "
                          f"which would replace this environment's onnxruntime {onnxruntime.__version__} / "
                          f"onnx {onnx.__version__}",
                 run_with="TensorRT 10 (strongly typed network from the Q/DQ ONNX)")
        return d

    def fast(self, cand: Candidate):
        return None  # CPU timings say nothing about a TensorRT engine

    def reference(self):
        return None


def _drop_initializer_shapes(path: Path) -> None:
    """Remove value_info entries of initializers. The dynamo exporter writes them; ORT's dynamic
    quantiser rewrites Gemm(transB) as MatMul with the weight transposed in place, and the stale
    (out, in) shape then fails its own shape inference ("differ in dimension 0")."""
    proto = onnx.load(str(path))
    names = {i.name for i in proto.graph.initializer}
    keep = [v for v in proto.graph.value_info if v.name not in names]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep)
    onnx.save_model(proto, str(path))


def _opset(path: Path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
