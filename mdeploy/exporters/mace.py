"""A MACE-compatible package: a frozen TF GraphDef and the MACE deployment file for it.

The graph is frozen from the canonical SavedModel (variables to constants) and optimized
with Grappler's constant folding only (other optimizers introduce ops such as AddN that
MACE's TensorFlow converter refuses); control-flow leftovers (NoOp) are stripped and each
output node is named after its ModelSpec output (a PAF model has two, `heatmaps` and
`pafs`: the deployment file lists both, each with its shape). Every op must be one MACE's
converter accepts, else the build names the op and the layer it came from.

A batch norm frozen in training mode (tf-openpose's mobilenet_v2_small: its MobileNetV2
backbone normalizes each feature map by the image's own mean and variance) has no stored
statistics for MACE's converter to fold; it is written as the ops it computes
(`lower_training_batch_norms`: Mean, SquaredDifference, Rsqrt, Mul, Sub, Add).

MACE's converter reads the graph with TensorFlow 1.x, which refuses a node attribute its
op registry does not know. The graph is therefore written as TF 1 reads it (`tf1_graph`):
the attributes TensorFlow added after 1.8 (`explicit_paddings`, `exponential_avg_factor`,
`half_pixel_centers`, ...) are removed where they hold their default (TensorFlow fills a
missing attribute with that same default), AddV2 becomes Add and FusedBatchNormV3 the
FusedBatchNorm TF 1.8 has. A non-default value that changes the numbers is kept when MACE
honours it (`half_pixel_centers: true`, read by MACE since 1.0) and refused otherwise.

The deployment file is rendered from `templates/mace/deployment.yml.j2` with names and
shapes read from the graph, the input range from the preprocessing contract, and the
checksum of the file written; mdeploy then checks it against MACE's rules and against the
graph (`mdeploy.mace_rules`).

MACE's converter needs TensorFlow 1.x and bazel, so the library itself is built by the
user with the command the build prints.
"""

from __future__ import annotations

from pathlib import Path

from mdeploy import mace_rules
from mdeploy.errors import ModelError
from mdeploy.exporters import ExportInputs, ExportTarget, Tolerance

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

# Raised when what this exporter writes changes (part of the cache key: older entries are rebuilt).
# 2: graphs as TF 1 reads them, validation_threshold at the model level.
# 3: every output of a multi-output model; training-mode batch norms lowered.
# 4: data format NONE for a tensor that is not 4-D (a 3-D model's coords).
WRITER = 4

# The attributes TensorFlow 1.8 (the version MACE documents) knows for each op MACE reads,
# from TF 1.8's op registry; the PEFM release graph (TF 1.x) carries only these. The last
# four ops came with TF 1.13-1.14: MACE versions that accept them run on that TensorFlow.
TF1_ATTRS: dict[str, frozenset[str]] = {
    op: frozenset(attrs.split())
    for op, attrs in {
        "Abs": "T", "Add": "T", "ArgMax": "T Tidx output_type", "AvgPool": "ksize strides padding data_format T",
        "BatchMatMul": "T adj_x adj_y", "BatchToSpaceND": "T Tblock_shape Tcrops", "BiasAdd": "T data_format",
        "Cast": "SrcT DstT", "ConcatV2": "N T Tidx", "Const": "value dtype",
        "Conv2D": "T strides use_cudnn_on_gpu padding data_format dilations",
        "Conv2DBackpropInput": "T strides use_cudnn_on_gpu padding data_format dilations",
        "Cumsum": "exclusive reverse T Tidx", "DepthToSpace": "T block_size",
        "DepthwiseConv2dNative": "T strides padding data_format dilations", "Div": "T", "Elu": "T", "Equal": "T",
        "ExpandDims": "T Tdim", "ExtractImagePatches": "ksizes strides rates T padding",
        "FakeQuantWithMinMaxArgs": "min max num_bits narrow_range", "FakeQuantWithMinMaxVars": "num_bits narrow_range",
        "Fill": "T", "FloorDiv": "T", "FusedBatchNorm": "T epsilon data_format is_training",
        "FusedBatchNormV2": "T U epsilon data_format is_training", "Gather": "validate_indices Tparams Tindices",
        "GatherV2": "Tparams Tindices Taxis", "Identity": "T", "MatMul": "transpose_a transpose_b T",
        "Max": "keep_dims T Tidx", "Maximum": "T", "MaxPool": "T ksize strides padding data_format",
        "Mean": "keep_dims T Tidx", "Min": "keep_dims T Tidx", "Minimum": "T", "MirrorPad": "T Tpaddings mode",
        "Mul": "T", "Neg": "T", "NotEqual": "T", "OneHot": "axis T TI", "Pack": "N T axis", "Pad": "T Tpaddings",
        "PadV2": "T Tpaddings", "Placeholder": "dtype shape", "Pow": "T", "Prod": "keep_dims T Tidx",
        "RealDiv": "T", "Relu": "T", "Relu6": "T", "Reshape": "T Tshape", "ResizeBicubic": "T align_corners",
        "ResizeBilinear": "T align_corners", "ResizeNearestNeighbor": "T align_corners", "ReverseV2": "Tidx T",
        "Rsqrt": "T", "Select": "T", "Shape": "T out_type", "Sigmoid": "T", "Sign": "T", "Slice": "T Index",
        "Softmax": "T", "SpaceToBatchND": "T Tblock_shape Tpaddings", "SpaceToDepth": "T block_size",
        "Split": "num_split T", "SplitV": "num_split T Tlen", "Sqrt": "T", "Square": "T",
        "SquaredDifference": "T", "Squeeze": "T squeeze_dims",
        "StridedSlice": "T Index begin_mask end_mask ellipsis_mask new_axis_mask shrink_axis_mask", "Sub": "T",
        "Sum": "keep_dims T Tidx", "Tanh": "T", "Tile": "T Tmultiples", "Transpose": "T Tperm", "Unpack": "num T axis",
        # TF 1.13-1.14
        "AddV2": "T", "BatchMatMulV2": "T adj_x adj_y", "FusedBatchNormV3": "T U epsilon data_format is_training",
        "LeakyRelu": "alpha T",
    }.items()
}
# Non-default values of newer attributes: MACE (since 1.0) honours half-pixel resizes; the
# others have no effect on an inference graph (`exponential_avg_factor` only acts while
# training, the rest are hints).
HONOURED_ATTRS = {("ResizeBilinear", "half_pixel_centers"), ("ResizeNearestNeighbor", "half_pixel_centers"),
                  ("ResizeBicubic", "half_pixel_centers")}
INERT_ATTRS = {"grad_a", "grad_b", "grad_x", "grad_y", "incompatible_shape_error"}


def targets(recipe, build_dir: Path) -> list[ExportTarget]:
    section = recipe.export.mace
    install = Path(build_dir) / "mace"
    settings = recipe.section_json("export", "mace")
    settings["install_dir"] = str(install)  # the yml names the .pb by its absolute path there
    settings["writer"] = WRITER
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


def freeze(saved_model: Path, output_names: str | tuple[str, ...] | list[str]):
    """The canonical model as a constant-folded frozen GraphDef whose output nodes are named `output_names`.

    One name (a str) or one per output of the serving signature, in the spec's order; returns
    (graph_def, input node name).
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.grappler import tf_optimizer

    names = (output_names,) if isinstance(output_names, str) else tuple(output_names)
    loaded = tf.saved_model.load(str(saved_model))  # keep it alive: the signature reads its variables
    signature = loaded.signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(signature)
    graph_def = frozen.graph.as_graph_def()
    nodes = [t.name.split(":")[0] for t in frozen.outputs]
    if len(names) == 1:
        renames = {nodes[0]: names[0]}
    else:
        # the frozen outputs follow the signature's outputs flattened (by name)
        keys = tf.nest.flatten({k: k for k in signature.structured_outputs})
        missing = [n for n in names if n not in keys]
        if missing:
            raise ModelError(f"the canonical model has no output {missing[0]!r} (it gives {', '.join(keys)})")
        by_key = dict(zip(keys, nodes, strict=True))
        renames = {by_key[n]: n for n in names}
    meta = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=frozen.graph)
    meta.collection_def["train_op"].node_list.value.extend(list(renames))
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers.extend(["constfold"])
    rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    optimized = tf_optimizer.OptimizeGraph(config, meta)
    return _tidy(optimized, renames), frozen.inputs[0].name.split(":")[0]


def _tidy(graph_def, renames: dict[str, str]):
    """Drop NoOps and control edges (MACE has no control flow); rename the output nodes.

    A node that already holds an output's name (the canonical graph's own `tf.identity`
    inside the inlined function) moves aside, so the names stay unique.
    """
    import tensorflow as tf

    taken = {n.name for n in graph_def.node}
    moved = {}
    for new in renames.values():
        if new in taken and new not in renames:
            k = 1
            while f"{new}_{k}" in taken:
                k += 1
            moved[new] = f"{new}_{k}"
            taken.add(moved[new])
    mapping = {**moved, **renames}
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    for node in graph_def.node:
        if node.op == "NoOp":
            continue
        copy = out.node.add()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(i for i in node.input if not i.startswith("^"))
        copy.name = mapping.get(copy.name, copy.name)
    for node in out.node:
        for k, ref in enumerate(node.input):
            name, sep, index = ref.partition(":")
            if name in mapping:
                node.input[k] = mapping[name] + sep + index
    if len(renames) > 1:  # several outputs: last, in the spec's order (how a reader of the graph lists them)
        order = list(renames.values())
        ends = sorted((n for n in out.node if n.name in order), key=lambda n: order.index(n.name))
        rest = [n for n in out.node if n.name not in order]
        nodes = [tf.compat.v1.NodeDef.FromString(n.SerializeToString()) for n in rest + ends]
        del out.node[:]
        out.node.extend(nodes)
    return out


def lower_training_batch_norms(graph_def) -> int:
    """Rewrite every FusedBatchNorm frozen with `is_training: true` as the ops it computes (in place).

    Such a node normalizes by the batch's own statistics (one image: each channel's mean and
    biased variance over height and width) and has no stored mean and variance, which MACE's
    converter needs to fold a batch norm. It becomes
    `(x - mean) * rsqrt(var + epsilon) * gamma + beta` with Mean over axes 1 and 2 (the batch
    of one), SquaredDifference, Rsqrt, Mul, Sub and Add, all ops MACE reads. Only output 0 may
    be used (the others are training statistics). Returns how many were rewritten.
    """
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    used: dict[str, set[int]] = {}
    for node in graph_def.node:
        for ref in node.input:
            name, _, index = ref.lstrip("^").partition(":")
            used.setdefault(name, set()).add(int(index or 0))
    targets = [n for n in graph_def.node
               if n.op.startswith("FusedBatchNorm") and "is_training" in n.attr and n.attr["is_training"].b]
    if not targets:
        return 0
    for node in targets:
        if used.get(node.name, set()) - {0}:
            raise ModelError(f"{node.name} ({node.op}) is a training-mode batch norm whose batch statistics are used; "
                             "MACE cannot run it")
        if node.attr.get("data_format") is not None and node.attr["data_format"].s not in (b"", b"NHWC"):
            raise ModelError(f"{node.name} ({node.op}) is a training-mode batch norm in {node.attr['data_format'].s.decode()}; "
                             "MACE packages are NHWC")
    lowered = {n.name for n in targets}
    kept = []
    for n in graph_def.node:
        if n.name not in lowered:
            kept.append(tf.compat.v1.NodeDef())
            kept[-1].CopyFrom(n)  # copies: the graph's own list is cleared below
    added = []

    def const(name: str, value: np.ndarray):
        n = tf.compat.v1.NodeDef(name=name, op="Const")
        n.attr["dtype"].type = types_pb2.DT_INT32 if value.dtype == np.int32 else types_pb2.DT_FLOAT
        n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        added.append(n)
        return name

    def op(name: str, kind: str, inputs: list[str], **attrs):
        n = tf.compat.v1.NodeDef(name=name, op=kind, input=inputs)
        n.attr["T"].type = types_pb2.DT_FLOAT
        for key, value in attrs.items():
            if isinstance(value, bool):
                n.attr[key].b = value
            else:
                n.attr[key].type = value
        added.append(n)
        return name

    for node in [tf.compat.v1.NodeDef.FromString(n.SerializeToString()) for n in targets]:
        x, gamma, beta = node.input[0], node.input[1], node.input[2]
        base = node.name + "/lowered"
        axes = const(f"{base}/axes", np.array([1, 2], np.int32))
        mean = op(f"{base}/mean", "Mean", [x, axes], keep_dims=True, Tidx=types_pb2.DT_INT32)
        sqdiff = op(f"{base}/squared_difference", "SquaredDifference", [x, mean])
        var = op(f"{base}/variance", "Mean", [sqdiff, axes], keep_dims=True, Tidx=types_pb2.DT_INT32)
        eps = const(f"{base}/epsilon", np.array(node.attr["epsilon"].f, np.float32))
        var_eps = op(f"{base}/add_epsilon", "Add", [var, eps])
        inv = op(f"{base}/rsqrt", "Rsqrt", [var_eps])
        scale = op(f"{base}/scale", "Mul", [inv, gamma])
        shifted = op(f"{base}/centred", "Sub", [x, mean])
        scaled = op(f"{base}/scaled", "Mul", [shifted, scale])
        op(node.name, "Add", [scaled, beta])  # keeps the node's name: its consumers read output 0
    del graph_def.node[:]
    graph_def.node.extend(kept + added)
    return len(targets)


def tf1_graph(graph_def):
    """The graph as TensorFlow 1 reads it (in place; returned): TF1 op names, no attribute TF 1.8 lacks.

    An attribute TF 1.8 does not know is removed when it holds its default; a non-default
    value is kept when MACE honours it (`HONOURED_ATTRS`), removed when it cannot change an
    inference (`INERT_ATTRS`, a batch norm's `exponential_avg_factor` outside training), and
    refused otherwise. Attributes starting with `_` (colocation and other graph hints) go.
    """
    from tensorflow.python.framework import op_def_registry

    outputs_used: dict[str, set[int]] = {}
    for node in graph_def.node:
        for ref in node.input:
            name, _, index = ref.lstrip("^").partition(":")
            outputs_used.setdefault(name, set()).add(int(index or 0))
    refused = []
    for node in graph_def.node:
        _tf1_op(node, outputs_used.get(node.name, set()))
        known = TF1_ATTRS.get(node.op)
        op_def = op_def_registry.get(node.op)
        defaults = {a.name: a.default_value for a in op_def.attr if a.HasField("default_value")} if op_def else {}
        for name in sorted(node.attr):
            if name.startswith("_"):
                del node.attr[name]
                continue
            if known is None or name in known:
                continue
            value = node.attr[name]
            if name in defaults and value == defaults[name]:
                del node.attr[name]
            elif (node.op, name) in HONOURED_ATTRS:
                continue
            elif name in INERT_ATTRS or (name == "exponential_avg_factor" and "is_training" in node.attr
                                           and not node.attr["is_training"].b):
                del node.attr[name]
            else:
                refused.append(f"{node.name} ({node.op}) {name}={str(value).strip()}")
    if refused:
        raise ModelError(
            f"the graph uses attributes TensorFlow 1.x (MACE's converter) does not know, with values that matter: "
            f"{'; '.join(refused[:5])}{' ...' if len(refused) > 5 else ''}",
            hint="rebuild those layers without the option (the node names start with the Keras layer name)",
        )
    return graph_def


def _tf1_op(node, used: set[int]) -> None:
    """Rename ops TF 1.8 lacks to their TF 1.8 equivalent where the meaning is the same."""
    from tensorflow.core.framework import types_pb2

    if node.op == "AddV2":
        node.op = "Add"  # the same sum (AddV2 only drops string support and marks it commutative)
    elif node.op in ("FusedBatchNormV2", "FusedBatchNormV3") and not used & {5}:
        if node.attr["T"].type == types_pb2.DT_FLOAT and node.attr["U"].type == types_pb2.DT_FLOAT:
            node.op = "FusedBatchNorm"  # float-only, outputs 0-4 are the same
            del node.attr["U"]
        else:
            node.op = "FusedBatchNormV2"


def graph_io(graph_def, input_node: str, output_node: str | tuple[str, ...] | list[str]) -> dict:
    """The graph's input and output node names and static shapes.

    `output` / `output_shape` are the first output's; `outputs` lists every output
    (`{"name", "shape"}`) in the order given.
    """
    import tensorflow as tf

    output_nodes = [output_node] if isinstance(output_node, str) else list(output_node)
    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)  # import_graph_def fills default attributes into the GraphDef it is given
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(copy, name="")
    shapes = {name: graph.get_tensor_by_name(f"{name}:0").shape for name in (input_node, *output_nodes)}
    for name, shape in shapes.items():
        if not shape.is_fully_defined():
            raise ModelError(f"the frozen graph's tensor {name} has no fixed shape ({shape}); MACE needs one")
    outputs = [{"name": name, "shape": shapes[name].as_list()} for name in output_nodes]
    return {"input": input_node, "input_shape": shapes[input_node].as_list(),
            "output": outputs[0]["name"], "output_shape": outputs[0]["shape"], "outputs": outputs}


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
    """Resize nodes with half_pixel_centers=True: MACE 1.0 and later honour it, older MACE read only align_corners."""
    return [n.name for n in graph_def.node
            if n.op.startswith("Resize") and "half_pixel_centers" in n.attr and n.attr["half_pixel_centers"].b]


def softmax_ranks(graph_def) -> dict[str, int]:
    """The rank of every Softmax node's output (a 3-D model's in-graph soft-argmax: [1, J, D*H*W])."""
    import tensorflow as tf

    nodes = [n.name for n in graph_def.node if n.op == "Softmax"]
    if not nodes:
        return {}
    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(copy, name="")
    return {name: graph.get_tensor_by_name(f"{name}:0").shape.rank for name in nodes}


def check_softmax(graph_def, settings: dict) -> list[str]:
    """MACE's Softmax kernels by rank: float CPU takes 2-D, 3-D and 4-D tensors, GPU 2-D and 4-D
    (MACE places any other on the CPU), the quantized CPU kernel 2-D and 4-D only. Refuses a
    quantized package whose Softmax is neither; returns the Softmax nodes a GPU runtime leaves to
    the CPU."""
    odd = {name: rank for name, rank in softmax_ranks(graph_def).items() if rank not in (2, 4)}
    if not odd:
        return []
    quantized = bool(settings.get("quantize")) or settings.get("data_type") == "uint8" or settings.get("runtime") == "dsp"
    name, rank = next(iter(odd.items()))
    if quantized:
        raise ModelError(
            f"MACE's quantized (uint8) Softmax takes 2-D or 4-D tensors, and {name} is {rank}-D "
            f"({len(odd)} such node{'s' if len(odd) > 1 else ''}; a soft-argmax over each joint's volume is one): "
            "MACE cannot run this graph quantized",
            hint="leave export.mace.quantize off (and a uint8 data_type), or export the raw volume "
                 "(model.volume.in_graph_softargmax: false) and take the soft-argmax in the app",
        )
    return sorted(odd) if "gpu" in settings.get("runtime", "") else []


def convert(target: ExportTarget, inputs: ExportInputs) -> dict:
    from mdeploy import __version__
    from mdeploy.codegen.render import render
    from mdeploy.fsutil import sha256_file

    s = target.settings
    spec = inputs.spec
    names = [o.name for o in spec.outputs]
    graph_def, input_node = freeze(inputs.saved_model, names[0] if len(names) == 1 else names)
    lowered = lower_training_batch_norms(graph_def)
    if lowered:
        inputs.log(f"{lowered} training-mode batch norms (normalizing by the image's own statistics) written as the ops they compute")
    check_ops(graph_def)
    on_cpu = check_softmax(graph_def, s)
    if on_cpu:
        inputs.log(f"{len(on_cpu)} Softmax node(s) of rank 3 run on MACE's CPU (its GPU Softmax takes 2-D or 4-D tensors): "
                   f"{', '.join(on_cpu[:3])}")
    tf1_graph(graph_def)
    io = graph_io(graph_def, input_node, names[0] if len(names) == 1 else names)
    got = [tuple(io["input_shape"])] + [tuple(o["shape"]) for o in io["outputs"]]
    want = [tuple(spec.input.shape)] + [tuple(o.shape) for o in spec.outputs]
    if got != want:
        def maps(shapes):
            return f"{list(shapes[0])} to {' + '.join(str(list(s)) for s in shapes[1:])}"

        raise ModelError(f"the frozen graph maps {maps(got)}, but the ModelSpec says {maps(want)}")
    pb = inputs.out
    pb.parent.mkdir(parents=True, exist_ok=True)
    from mdeploy.exporters.reproducible import graph_def_bytes

    pb.write_bytes(graph_def_bytes(graph_def))
    sha = sha256_file(pb)

    name = pb.stem
    yml_path = Path(s["install_dir"]) / f"{name}.yml"
    lo, hi = spec.preprocessing.input_range()
    quantized = bool(s["quantize"] or s["quantize_large_weights"])
    tag = s["model_tag"] or mace_rules.tag_for(spec.name)
    text = render(
        "mace/deployment.yml.j2",
        mdeploy_version=__version__,
        recipe=spec.name,
        pb_name=pb.name,
        yml_path=str(yml_path),
        library_name=s["library_name"] or mace_rules.tag_for(spec.name),
        target_abis=s["target_abis"],
        graph_format=s["graph_format"],
        data_format=s["data_format"],
        model_tag=tag,
        model_file_path=str(Path(s["install_dir"]) / pb.name),
        sha256=sha,
        input_name=io["input"],
        input_shape=mace_rules.shape_text(io["input_shape"]),
        input_range=f"{lo:g},{hi:g}",
        outputs=[{"name": o["name"], "shape": mace_rules.shape_text(o["shape"]), "data_format": mace_rules.data_format_for(o["shape"])}
                 for o in io["outputs"]],
        validation_threshold=mace_rules.thresholds_for(s["runtime"], quantized, s.get("validation_threshold")),
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
    problems = mace_rules.validate(config) + mace_rules.graph_problems(config, io, tag)
    if problems:
        raise ModelError(f"mdeploy wrote a MACE deployment file that breaks MACE's rules: {'; '.join(problems)}")
    halfpixel = half_pixel_resizes(graph_def)
    if halfpixel:
        inputs.log(f"{len(halfpixel)} resize nodes use half_pixel_centers: MACE 1.0 and later honour it, older MACE releases do not")
    return {
        "ops": sorted({n.op for n in graph_def.node}),
        "nodes": len(graph_def.node),
        "input": io["input"],
        "input_shape": io["input_shape"],
        "output": io["output"],
        "output_shape": io["output_shape"],
        **({"outputs": io["outputs"]} if len(io["outputs"]) > 1 else {}),
        **({"lowered_batch_norms": lowered} if lowered else {}),
        **({"gpu_to_cpu": on_cpu} if on_cpu else {}),
        "half_pixel_resizes": len(halfpixel),
        "convert_command": f"cd /path/to/mace && python tools/converter.py convert --config={yml_path}",
    }
