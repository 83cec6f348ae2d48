"""Thin client for ASPECTS atlas segmentation of DWI served by NVIDIA Triton."""

__version__ = "0.1.0"
