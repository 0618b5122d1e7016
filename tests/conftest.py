import warnings

import pytest
import torch

# torchvision and timm warn about deprecated arguments of their own; they are not ours to fix.
warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
