"""mdeploy: recipe-driven build tool for on-device pose models.

The library is the product; the `mdeploy` command is a thin layer over it. Heavy
frameworks (TensorFlow, coremltools, tf2onnx) are imported only by the stages that
need them, so importing this package stays cheap.
"""

__version__ = "0.1.0"
