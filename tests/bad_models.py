"""User models that misbehave, each in one way: the model-code containment cases of tests/engine/study/test_own_model.py
and benchmarks/fault_sweep.py copy this file and name its classes (it is never imported by the engine)."""

import sys

from torch import nn


def body(out_channels, stride=1):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, out_channels, 3, stride, 1),
    )


class Half(nn.Module):  # logits at half the input size
    def __init__(self, num_classes=7):
        super().__init__()
        self.c = body(num_classes, stride=2)

    def forward(self, x):
        return self.c(x)


class Pair(Half):  # a tuple
    def forward(self, x):
        return nn.functional.interpolate(self.c(x), size=x.shape[-2:]), x


class ThreeClasses(nn.Module):  # ignores num_classes
    def __init__(self, num_classes=7):
        super().__init__()
        self.c = body(3)

    def forward(self, x):
        return self.c(x)


class ExitsInForward(Half):
    def forward(self, x):
        sys.exit(3)


class ExitsInInit(nn.Module):
    def __init__(self, num_classes=7):
        raise SystemExit(0)


class InterruptsInInit(nn.Module):
    def __init__(self, num_classes=7):
        raise KeyboardInterrupt


class Slow(Half):  # far too slow at any size
    def forward(self, x):
        import time

        time.sleep(30)
        return self.c(x)
