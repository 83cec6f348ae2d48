"""Model side: network, checkpoints, ONNX/TensorRT export, model repository, phantoms.

Submodules import torch lazily; importing this package stays light.
"""
