"""Deployment: a chosen instance as something that runs.

:mod:`.runtime` turns a network and an instance into a plain module that holds and runs only what the instance
needs; :mod:`.export` writes it as ONNX files run by onnxruntime; :mod:`.bench` times both against the original
model; :mod:`.artifacts` saves and loads the weights files.
"""

from .artifacts import load_model, load_multi_exit, save_model, save_multi_exit
from .export import ExportError, OnnxRunner, export_onnx
from .runtime import AnytimeNet, BudgetedNet, DeployedNet, EarlyExitNet, deploy

__all__ = [
    "deploy",
    "DeployedNet",
    "BudgetedNet",
    "AnytimeNet",
    "EarlyExitNet",
    "export_onnx",
    "OnnxRunner",
    "ExportError",
    "save_model",
    "load_model",
    "save_multi_exit",
    "load_multi_exit",
]
