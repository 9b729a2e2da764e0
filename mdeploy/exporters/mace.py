"""A MACE-compatible package: a frozen TF GraphDef and the MACE deployment file for it.

The graph is frozen from the canonical SavedModel (variables to constants) and optimized
with Grappler's constant folding only (other optimizers introduce ops such as AddN that
MACE's TensorFlow converter refuses); control-flow leftovers (NoOp) are stripped and the
output node is named after the ModelSpec output. Every op must be one MACE's converter
accepts, else the build names the op and the layer it came from. The deployment file is
rendered from `templates/mace/deployment.yml.j2` with names and shapes read from the
graph, the input range from the preprocessing contract, and the checksum of the file
written; mdeploy then checks it against MACE's rules (`mace_config`).

MACE's converter needs TensorFlow 1.x and bazel, so the library itself is built by the
user with the command the build prints.
"""

from __future__ import annotations

from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.exporters import ExportInputs, ExportTarget, Tolerance, mace_config

# TensorFlow ops MACE's TensorFlow converter accepts.
MACE_TF_OPS = frozenset(
    """Abs Add AddV2 ArgMax AvgPool BatchMatMul BatchMatMulV2 BatchToSpaceND BiasAdd Cast ConcatV2 Const Conv2D
    Conv2DBackpropInput Cumsum DepthwiseConv2dNative DepthToSpace Div Elu Equal ExpandDims ExtractImagePatches
    FakeQuantWithMinMaxVars FakeQuantWithMinMaxArgs Fill FloorDiv FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3
    Gather GatherV2 Identity LeakyRelu MatMul Max Maximum MaxPool Mean Min Minimum MirrorPad Mul Neg NotEqual OneHot
    Pack Pad PadV2 Placeholder Pow Prod RealDiv Relu Relu6 Reshape ResizeBicubic ResizeBilinear ResizeNearestNeighbor
    ReverseV2 Rsqrt Select Shape Sigmoid Sign Slice Softmax SpaceToBatchND SpaceToDepth Split SplitV Sqrt Square
    SquaredDifference Squeeze Stack StridedSlice Sub Sum Tanh Tile Transpose Unpack Unstack""".split()
)

# The frozen graph runs in TensorFlow with MACE's reading of it; fp32 differences only.
TOLERANCE = Tolerance(max_abs=1e-4, min_agreement=0.98)

THRESHOLD_KEYS = {"cpu": ("CPU",), "gpu": ("GPU",), "cpu+gpu": ("CPU", "GPU"), "dsp": ("HEXAGON",), "hta": ("HTA",), "apu": ("APU",)}


def targets(recipe, build_dir: Path) -> list[ExportTarget]:
    section = recipe.export.mace
    install = Path(build_dir) / "mace"
    settings = recipe.section_json("export", "mace")
    settings["install_dir"] = str(install)  # the yml names the .pb by its absolute path there
    return [
        ExportTarget(
            artifact_id="mace",
            format="mace",
            variant=section.runtime,
            filename=f"mace/{recipe.name}.pb",
            settings=settings,
            tools=("tensorflow",),
            tolerance=TOLERANCE,
            run=convert,
            describe=f"freeze a MACE-compatible graph and deployment file ({section.runtime})",
            extra_files=(f"mace/{recipe.name}.yml",),
        )
    ]


def freeze(saved_model: Path, output_name: str):
    """The canonical model as a constant-folded frozen GraphDef with `output_name` as its output node."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.grappler import tf_optimizer

    loaded = tf.saved_model.load(str(saved_model))  # keep it alive: the signature reads its variables
    frozen = convert_variables_to_constants_v2(loaded.signatures["serving_default"])
    graph_def = frozen.graph.as_graph_def()
    output = frozen.outputs[0].name.split(":")[0]
    meta = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=frozen.graph)
    meta.collection_def["train_op"].node_list.value.extend([output])
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers.extend(["constfold"])
    rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    optimized = tf_optimizer.OptimizeGraph(config, meta)
    return _tidy(optimized, output, output_name), frozen.inputs[0].name.split(":")[0]


def _tidy(graph_def, output: str, output_name: str):
    """Drop NoOps and control edges (MACE has no control flow); rename the output node."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    for node in graph_def.node:
        if node.op == "NoOp":
            continue
        copy = out.node.add()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(i for i in node.input if not i.startswith("^"))
        if copy.name == output:
            copy.name = output_name
    for node in out.node:
        for k, name in enumerate(node.input):
            if name == output or name.startswith(output + ":"):
                node.input[k] = name.replace(output, output_name, 1)
    return out


def check_ops(graph_def) -> None:
    unsupported: dict[str, list[str]] = {}
    for node in graph_def.node:
        if node.op not in MACE_TF_OPS:
            unsupported.setdefault(node.op, []).append(node.name)
    if unsupported:
        parts = [f"{op} (first at {names[0]}, {len(names)} node{'s' if len(names) > 1 else ''})" for op, names in sorted(unsupported.items())]
        raise ModelError(
            f"the graph uses TensorFlow ops MACE's converter does not accept: {'; '.join(parts)}",
            hint="replace the layers those nodes come from (the node names start with the Keras layer name)",
        )


def half_pixel_resizes(graph_def) -> list[str]:
    """ResizeBilinear nodes with half_pixel_centers=True: MACE reads only align_corners."""
    return [n.name for n in graph_def.node if n.op == "ResizeBilinear" and n.attr["half_pixel_centers"].b]


def convert(target: ExportTarget, inputs: ExportInputs) -> dict:
    from mdeploy import __version__
    from mdeploy.codegen.render import render
    from mdeploy.fsutil import sha256_file

    s = target.settings
    spec = inputs.spec
    graph_def, input_node = freeze(inputs.saved_model, spec.output.name)
    check_ops(graph_def)
    pb = inputs.out
    pb.parent.mkdir(parents=True, exist_ok=True)
    from mdeploy.exporters.reproducible import graph_def_bytes

    pb.write_bytes(graph_def_bytes(graph_def))
    sha = sha256_file(pb)

    name = pb.stem
    yml_path = Path(s["install_dir"]) / f"{name}.yml"
    lo, hi = spec.preprocessing.input_range()
    thresholds = dict(mace_config.DEFAULT_THRESHOLDS)
    thresholds.update({k.upper(): v for k, v in (s.get("validation_threshold") or {}).items()})
    devices = THRESHOLD_KEYS[s["runtime"]]
    text = render(
        "mace/deployment.yml.j2",
        mdeploy_version=__version__,
        recipe=spec.name,
        pb_name=pb.name,
        yml_path=str(yml_path),
        library_name=s["library_name"] or mace_config.tag_for(spec.name),
        target_abis=s["target_abis"],
        graph_format=s["graph_format"],
        data_format=s["data_format"],
        model_tag=s["model_tag"] or mace_config.tag_for(spec.name),
        model_file_path=str(Path(s["install_dir"]) / pb.name),
        sha256=sha,
        input_name=input_node,
        input_shape=",".join(str(d) for d in spec.input.shape),
        input_range=f"{lo:g},{hi:g}",
        output_name=spec.output.name,
        output_shape=",".join(str(d) for d in spec.output.shape),
        validation_threshold={d: thresholds[d] for d in devices if d in thresholds},
        runtime=s["runtime"],
        data_type=s["data_type"],
        winograd=s["winograd"],
        obfuscate=int(s["obfuscate"]),
        quantize=int(s["quantize"]),
        quantize_large_weights=int(s["quantize_large_weights"]),
    )
    yml = pb.with_suffix(".yml")
    yml.write_text(text, encoding="utf-8")

    import yaml

    config = yaml.safe_load(text)
    # The yml names the .pb where the build folder will hold it; check the copy in hand.
    for model in config.get("models", {}).values():
        model["model_file_path"] = str(pb)
    problems = mace_config.validate(config)
    if problems:
        raise ModelError(f"mdeploy wrote a MACE deployment file that breaks MACE's rules: {'; '.join(problems)}")
    halfpixel = half_pixel_resizes(graph_def)
    if halfpixel:
        inputs.log(f"{len(halfpixel)} ResizeBilinear nodes use half_pixel_centers, which MACE ignores (parity measures the effect)")
    return {
        "ops": sorted({n.op for n in graph_def.node}),
        "nodes": len(graph_def.node),
        "input": input_node,
        "output": spec.output.name,
        "half_pixel_resizes": len(halfpixel),
        "convert_command": f"cd /path/to/mace && python tools/converter.py convert --config={yml_path}",
    }
