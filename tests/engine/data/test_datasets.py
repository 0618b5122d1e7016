"""mess_core.data: datasets on real files written to tmp_path, the synthetic generator, transforms and determinism."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from mess_core.data import (
    MEAN,
    STD,
    CamVid,
    Cityscapes,
    FolderDataset,
    PascalVOC,
    SyntheticSegmentation,
    build_dataset,
    denormalize,
    eval_transform,
    list_datasets,
    pad_collate,
    train_transform,
)
from mess_core.data.voc import voc_palette
from mess_core.errors import DataError

REAL_CAMVID = Path("/work/shared/datasets/camvid")


# --- helpers: write real image/label files -------------------------------------------------------------------------


def write_rgb(path: Path, height: int = 12, width: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_label(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def folder_dataset(
    root: Path,
    stems=("a", "b"),
    *,
    yaml: str = "classes: [background, road, car]\nignore_index: 255\n",
    height: int = 12,
    width: int = 16,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(yaml)
    for k, stem in enumerate(stems):
        write_rgb(root / "images" / f"{stem}.png", height, width, seed=k)
        write_label(root / "masks" / f"{stem}.png", np.arange(height * width).reshape(height, width) % 3)
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- synthetic ---------------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_seed_and_split_change_it():
    a = SyntheticSegmentation(split="train", length=6, seed=0)
    b = SyntheticSegmentation(split="train", length=6, seed=0)
    for i in (0, 5):
        assert a.load(i)[0].numpy().tobytes() == b.load(i)[0].numpy().tobytes()
        assert a.load(i)[1].numpy().tobytes() == b.load(i)[1].numpy().tobytes()
    other_seed = SyntheticSegmentation(split="train", length=6, seed=1)
    other_split = SyntheticSegmentation(split="val", length=6, seed=0)
    for other in (other_seed, other_split):
        assert not torch.equal(a.load(0)[0], other.load(0)[0])
    assert not torch.equal(a.load(0)[0], a.load(1)[0])


def test_synthetic_shapes_dtypes_and_labels():
    data = SyntheticSegmentation(split="test", length=10, size=(48, 72))
    assert len(SyntheticSegmentation(split="train")) == 256 and len(SyntheticSegmentation(split="val")) == 64
    assert data.info.num_classes == 7 and data.info.ignore_index == 255
    seen = set()
    for i in range(len(data)):
        image, mask = data.load(i)
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 72)
        assert mask.dtype == torch.int64 and mask.shape == (48, 72)
        seen |= set(mask.unique().tolist())
    assert seen <= set(range(7)) | {255}
    assert 255 in seen and len(seen - {0, 255}) >= 3
    x, y = data[0]
    assert x.dtype == torch.float32 and x.shape == (3, 48, 72) and y.dtype == torch.int64
    assert type(x) is torch.Tensor and type(y) is torch.Tensor
    raw_image, raw_mask = data.raw(0)
    assert raw_image.shape == (48, 72, 3) and raw_image.dtype == np.uint8 and raw_mask.dtype == np.int64


def _object_area_and_contrast(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    areas = []
    for cls in range(1, 7):
        count, _, stats, _ = cv2.connectedComponentsWithStats((mask == cls).astype(np.uint8), connectivity=4)
        areas += stats[1:, cv2.CC_STAT_AREA].tolist()
    pixels = image.astype(np.float32)
    background = pixels[mask == 0].mean(axis=0)
    objects = (mask > 0) & (mask < 255)
    contrast = float(np.abs(pixels[objects] - background).mean()) if objects.any() else 0.0
    return float(np.mean(areas)) if areas else 0.0, contrast


def test_synthetic_difficulty_spreads_and_hard_means_small_low_contrast_objects():
    data = SyntheticSegmentation(split="val", length=64)
    difficulty = np.array([data.difficulty(i) for i in range(len(data))])
    assert difficulty.min() < 0.15 and difficulty.max() > 0.85
    assert np.histogram(difficulty, bins=4, range=(0, 1))[0].min() >= 5  # every quarter is populated
    order = np.argsort(difficulty)
    easy = np.array([_object_area_and_contrast(*data.raw(int(i))) for i in order[:12]])
    hard = np.array([_object_area_and_contrast(*data.raw(int(i))) for i in order[-12:]])
    assert easy[:, 0].mean() > 2 * hard[:, 0].mean()  # objects are much smaller when hard
    assert easy[:, 1].mean() > hard[:, 1].mean()  # and closer in colour to the background


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(DataError, match="no split 'dev'"):
        SyntheticSegmentation(split="dev")
    with pytest.raises(DataError, match="length"):
        SyntheticSegmentation(length=0)
    with pytest.raises(DataError, match="size"):
        SyntheticSegmentation(size=(8, 8))
    with pytest.raises(IndexError):
        SyntheticSegmentation(length=3)[3]


# --- transforms --------------------------------------------------------------------------------------------------


def _pair(height: int, width: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    image = tv_tensors.Image(torch.full((3, height, width), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(height, width, dtype=torch.int64))
    return image, mask


def test_train_transform_crops_to_size_and_pads_with_ignore():
    torch.manual_seed(1)
    transform = train_transform(crop=(40, 50), scale=(1.0, 1.0), ignore_index=7, jitter=0.0)
    x, y = transform(*_pair(20, 30))
    assert x.shape == (3, 40, 50) and x.dtype == torch.float32 and y.shape == (40, 50) and y.dtype == torch.int64
    assert int((y == 7).sum()) == 40 * 50 - 20 * 30 and int((y == 1).sum()) == 20 * 30
    zero = ((torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)).view(3, 1)
    assert torch.allclose(x[:, y == 7], zero.expand(3, int((y == 7).sum())), atol=1e-6)
    for _ in range(5):  # random scales: always the crop size, padding always ignore
        x, y = train_transform(crop=(64, 64), ignore_index=255)(*_pair(30, 40))
        assert x.shape == (3, 64, 64) and set(y.unique().tolist()) <= {1, 255}


def test_train_transform_keeps_image_and_mask_aligned():
    # Each label gets a distinctive colour, so the transformed image says which label every pixel should have.
    colours = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=torch.uint8)
    cells = torch.randint(0, 5, (6, 8), generator=torch.Generator().manual_seed(0))
    label = cells.repeat_interleave(10, 0).repeat_interleave(10, 1)  # 60 x 80, 10-pixel blocks
    image = tv_tensors.Image(colours[label].permute(2, 0, 1).contiguous())
    transform = train_transform(crop=(40, 48), scale=(0.6, 1.7), jitter=0.0, ignore_index=255)
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = transform(image, tv_tensors.Mask(label))
        pixels = torch.from_numpy(denormalize(x)).float()  # H, W, 3
        nearest = torch.cdist(pixels.view(-1, 3), colours.float()).argmin(1).view(y.shape)
        # Away from block edges (where bilinear resizing blends colours) colour and mask must agree exactly: check
        # pixels whose 3x3 neighbourhood has one label (the crop border counts as an edge). A 2-pixel shift fails.
        padded = torch.nn.functional.pad(y, (1, 1, 1, 1), value=255)[None].float()
        uniform = torch.nn.functional.max_pool2d(padded, 3, 1)[0] == -torch.nn.functional.max_pool2d(-padded, 3, 1)[0]
        check = uniform & (y != 255)
        assert int(check.sum()) > 0.3 * y.numel()
        assert torch.equal(nearest[check], y[check])


def test_photometric_steps_change_the_image_as_named_and_never_the_mask():
    # the crop is the image's own size and nothing else is random: any change comes from the step under test
    def draws(image, seeds=range(12), **step):
        transform = train_transform(crop=(24, 32), scale=(1.0, 1.0), hflip=False, jitter=0.0, ignore_index=255, **step)
        out = []
        for seed in seeds:
            torch.manual_seed(seed)
            x, y = transform(image, mask)
            assert torch.equal(y, mask.as_subclass(torch.Tensor))
            out.append(denormalize(x).astype(np.int16))
        return out

    mask = tv_tensors.Mask(torch.arange(24 * 32).reshape(24, 32) % 5)
    grey, _ = _pair(24, 32)
    red = tv_tensors.Image(torch.zeros(3, 24, 32, dtype=torch.uint8))
    red[0] = 200
    edge = tv_tensors.Image(torch.zeros(3, 24, 32, dtype=torch.uint8))
    edge[:, :, 16:] = 255
    assert all((d == 200).all() for d in draws(grey))  # no step asked: the pixels come back as they were

    # hue turns colours and leaves greys alone
    assert all((d == 200).all() for d in draws(grey, hue=0.5))
    assert sum(not (d == [200, 0, 0]).all() for d in draws(red, hue=0.5)) >= 10
    # blur with probability 1 blends the two sides of an edge (sigma is drawn from 0.1-2, the smallest barely blurs)
    blends = [int(((d > 0) & (d < 255)).sum()) for d in draws(edge, blur=1.0)]
    assert sum(n > 0 for n in blends) >= 9 and max(blends) <= 24 * 3 * 4  # a 5-wide kernel: two columns each side
    # noise of 0.1 (of the 0-1 range) on half of the images: a flat image gets a spread of about 25 of 255
    spreads = [float(d.std()) for d in draws(grey, seeds=range(40), noise=0.1)]
    noisy = [v for v in spreads if v > 0]
    assert 10 <= len(noisy) <= 30 and all(15 < v < 35 for v in noisy)


def test_eval_transform_resizes_mask_with_nearest_labels():
    image, _ = _pair(20, 30)
    mask = tv_tensors.Mask(torch.arange(20 * 30).reshape(20, 30) % 4)
    x, y = eval_transform(size=(45, 70))(image, mask)
    assert x.shape == (3, 45, 70) and y.shape == (45, 70) and set(y.unique().tolist()) <= {0, 1, 2, 3}
    x, y = eval_transform()(image, mask)
    assert torch.equal(y, mask.as_subclass(torch.Tensor)) and denormalize(x)[0, 0].tolist() == [200, 200, 200]


def test_pad_collate_pads_with_zero_and_ignore_and_stacks_equal_sizes():
    a = (torch.ones(3, 4, 5), torch.ones(4, 5, dtype=torch.int64))
    b = (torch.ones(3, 6, 3), torch.ones(6, 3, dtype=torch.int64))
    images, masks = pad_collate([a, b], ignore_index=9)
    assert images.shape == (2, 3, 6, 5) and masks.shape == (2, 6, 5)
    assert images[0, :, 4:].eq(0).all() and masks[0, 4:].eq(9).all() and masks[1, :, 3:].eq(9).all()
    assert images[0, :, :4].eq(1).all() and masks[1, :, :3].eq(1).all()
    images, masks = pad_collate([a, a], ignore_index=9)
    assert torch.equal(images, torch.stack([a[0], a[0]])) and torch.equal(masks, torch.stack([a[1], a[1]]))


# --- per-sample deterministic augmentation -----------------------------------------------------------------------


def _augmented(length: int = 6) -> SyntheticSegmentation:
    data = SyntheticSegmentation(split="train", length=length, size=(40, 56), seed=5)
    data.transform = train_transform(crop=(32, 32), ignore_index=data.info.ignore_index)
    return data


def _collect(data, order, epochs=(0,), **loader_options) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(_Indexed(data), batch_size=None, sampler=order, **loader_options)
    results = {}
    for epoch in epochs:
        data.set_epoch(epoch)
        for index, (x, y) in loader:
            results[epoch, index] = (x, y)
    return results


class _Indexed(torch.utils.data.Dataset):
    """Returns the index with the sample so results can be compared whatever the order."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return index, self.data[index]


def test_augmentation_depends_only_on_seed_epoch_and_index():
    data = _augmented()
    in_order = _collect(data, range(6), epochs=(0, 1))
    # Two workers (each with its own process and random state), a shuffled order, persistent workers across epochs.
    shuffled = _collect(data, [4, 1, 5, 0, 3, 2], epochs=(0, 1), num_workers=2, persistent_workers=True)
    assert in_order.keys() == shuffled.keys()
    for key, (x, y) in in_order.items():
        assert torch.equal(x, shuffled[key][0]) and torch.equal(y, shuffled[key][1]), key
    assert not torch.equal(in_order[0, 0][0], in_order[1, 0][0])  # a new epoch, new augmentation
    # A "resumed" run: a fresh dataset object jumping straight to epoch 1, sample 3.
    resumed = _augmented()
    resumed.set_epoch(1)
    assert torch.equal(resumed[3][0], in_order[1, 3][0])


def test_getitem_neither_uses_nor_disturbs_the_global_random_state():
    data = _augmented()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = data[2][0]
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)
    assert torch.equal(data[2][0], first)


# --- folder datasets ---------------------------------------------------------------------------------------------


def test_folder_dataset_loads_pairs_by_stem(tmp_path):
    root = folder_dataset(tmp_path / "ds", stems=("b", "a"))
    write_rgb(root / "images" / "c.jpg", seed=3)
    write_label(root / "masks" / "c.png", np.full((12, 16), 255))
    (root / "images" / ".DS_Store").write_bytes(b"junk")
    data = FolderDataset(root)
    assert len(data) == 3 and [data.name_of(i) for i in range(3)] == ["a.png", "b.png", "c.jpg"]
    assert data.info.classes == ("background", "road", "car") and data.info.name == "ds"
    assert len(data.info.palette) == 3
    image, mask = data.raw(0)
    assert image.shape == (12, 16, 3) and mask.max() == 2
    assert (data.raw(2)[1] == 255).all()
    assert data.validate() == []


def test_folder_dataset_with_split_folders(tmp_path):
    root = tmp_path / "ds"
    folder_dataset(root / "train", stems=("a", "b", "c"))
    folder_dataset(root / "val", stems=("d",))
    (root / "dataset.yaml").write_text("name: mine\nclasses: [bg, x, y]\npalette: [[0,0,0],[1,2,3],[4,5,6]]\n")
    assert len(FolderDataset(root, split="train")) == 3
    val = FolderDataset(root, split="val")
    assert len(val) == 1 and val.info.name == "mine" and val.info.palette[1] == (1, 2, 3)
    with pytest.raises(DataError, match=r"split 'test' folder .*contains: dataset.yaml, train/, val/"):
        FolderDataset(root, split="test")


def test_folder_dataset_unpaired_files_are_named(tmp_path):
    root = folder_dataset(tmp_path / "ds", stems=("a", "b"))
    (root / "masks" / "b.png").unlink()
    write_label(root / "masks" / "orphan.png", np.zeros((12, 16)))
    with pytest.raises(DataError) as error:
        FolderDataset(root)
    assert "b.png" in str(error.value) and "no mask" in str(error.value)
    assert "orphan.png" in str(error.value) and "no image" in str(error.value)


@pytest.mark.parametrize(
    "yaml, field",
    [
        ("classes: []\n", "classes"),
        ("classes: road\n", "classes"),
        ("classes: [a, b, a]\n", "classes"),
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index"),
        ("classes: [a, b]\nignore_index: high\n", "ignore_index"),
        ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "palette"),
        ("classes: [a, b]\nignore: 255\n", "ignore"),
        ("classes: [a, b\n", "YAML"),
    ],
)
def test_folder_dataset_bad_yaml_names_file_and_field(tmp_path, yaml, field):
    root = folder_dataset(tmp_path / "ds", yaml=yaml)
    with pytest.raises(DataError, match=field) as error:
        FolderDataset(root)
    assert str(root / "dataset.yaml") in str(error.value)


def test_folder_dataset_missing_yaml_and_empty_folder(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    (root / "dataset.yaml").unlink()
    with pytest.raises(DataError, match="dataset.yaml: not found.*classes:"):
        FolderDataset(root)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    (empty / "dataset.yaml").write_text("classes: [a, b]\n")
    with pytest.raises(DataError, match="are empty"):
        FolderDataset(empty)
    with pytest.raises(DataError, match="does not exist"):
        FolderDataset(tmp_path / "nowhere")


def test_an_images_stored_size_is_read_from_its_header_and_agrees_with_loading_it(tmp_path):
    root = folder_dataset(tmp_path / "ds", stems=("a",))
    write_rgb(root / "images" / "b.png", 20, 30, seed=1)
    write_label(root / "masks" / "b.png", np.zeros((20, 30)))
    data = FolderDataset(root)
    assert [data.size_of(i) for i in range(2)] == [tuple(data.load(i)[0].shape[-2:]) for i in range(2)]
    assert data.size_of(1) == (20, 30)
    synthetic = SyntheticSegmentation(length=2, size=(24, 40))
    assert synthetic.size_of(1) == tuple(synthetic.load(1)[0].shape[-2:]) == (24, 40)
    (root / "images" / "b.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"b\.png: cannot read this image file"):
        data.size_of(1)


def test_truncated_png_is_a_data_error_naming_the_file(tmp_path):
    root = folder_dataset(tmp_path / "ds", height=64, width=64)
    truncate(root / "images" / "a.png")
    data = FolderDataset(root)
    with pytest.raises(DataError, match=r"a\.png: cannot read this image file.*truncated"):
        data[0]
    truncate(root / "masks" / "b.png")
    with pytest.raises(DataError, match=r"masks/b\.png: cannot read this label file"):
        data.raw(1)


def test_label_outside_classes_names_file_and_values(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    values = np.zeros((12, 16))
    values[0, :3] = 7
    values[1, 0] = 9
    values[2, 0] = 255  # the ignore index is fine
    write_label(root / "masks" / "b.png", values)
    data = FolderDataset(root)
    data[0]
    with pytest.raises(DataError, match=r"masks/b\.png: label values 7 \(3 px\), 9 \(1 px\) are neither a class"):
        data[1]


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    write_label(root / "masks" / "a.png", np.zeros((10, 16)))
    with pytest.raises(DataError) as error:
        FolderDataset(root)[0]
    message = str(error.value)
    assert "images/a.png is 12x16" in message and "masks/a.png is 10x16" in message


def test_rgb_mask_is_rejected_with_advice(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    write_rgb(root / "masks" / "a.png")
    with pytest.raises(DataError, match="single-channel"):
        FolderDataset(root)[0]


def test_validate_collects_every_problem(tmp_path):
    root = folder_dataset(tmp_path / "ds", stems=("a", "b", "c", "d"), height=32, width=32)
    truncate(root / "images" / "a.png")
    write_label(root / "masks" / "b.png", np.full((32, 32), 5))
    write_label(root / "masks" / "c.png", np.zeros((32, 30)))
    problems = FolderDataset(root).validate()
    assert len(problems) == 3
    assert "a.png" in problems[0] and "b.png" in problems[1] and "c.png" in problems[2]
    assert len(FolderDataset(root).validate(limit=2)) == 2


# --- CamVid, Cityscapes, VOC on small real layouts ---------------------------------------------------------------


def camvid_layout(root: Path, split: str = "train", stems=("0001TP_000010", "0001TP_000020")) -> Path:
    for k, stem in enumerate(stems):
        write_rgb(root / split / f"{stem}.png", 9, 12, seed=k)
        write_label(root / f"{split}annot" / f"{stem}.png", np.arange(9 * 12).reshape(9, 12) % 12)
    return root


def test_camvid_on_segnet_layout(tmp_path):
    root = camvid_layout(tmp_path / "camvid")
    data = CamVid(root, split="train")
    assert len(data) == 2 and data.info.num_classes == 11 and data.info.ignore_index == 11
    image, mask = data.raw(1)
    assert image.shape == (9, 12, 3) and mask.max() == 11
    x, y = data[0]
    assert x.shape == (3, 9, 12) and y.dtype == torch.int64


def test_camvid_layout_errors(tmp_path):
    root = camvid_layout(tmp_path / "camvid")
    with pytest.raises(DataError, match=r"val image folder .*/val does not exist; .* contains: train/, trainannot/"):
        CamVid(root, split="val")
    with pytest.raises(DataError, match="CamVid root .* does not exist"):
        CamVid(tmp_path / "missing")
    (root / "val").mkdir()
    (root / "valannot").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        CamVid(root, split="val")
    (root / "trainannot" / "0001TP_000020.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 CamVid train images have no label file: .*0001TP_000020\.png"):
        CamVid(root)
    with pytest.raises(DataError, match="no split"):
        CamVid(root, split="training")


@pytest.mark.skipif(not (REAL_CAMVID / "train").is_dir(), reason="no CamVid copy on this machine")
def test_real_camvid_sample():
    data = CamVid(REAL_CAMVID, split="val")
    image, mask = data.raw(0)
    assert image.shape == (360, 480, 3) and mask.shape == (360, 480)
    assert mask.min() >= 0 and mask.max() <= 11


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    city = "aachen"
    ids = np.array([[7, 26, 0, 33], [24, 1, 23, 255]])
    write_rgb(tmp_path / "leftImg8bit" / "train" / city / "aachen_000001_000019_leftImg8bit.png", 2, 4)
    write_label(tmp_path / "gtFine" / "train" / city / "aachen_000001_000019_gtFine_labelIds.png", ids)
    data = Cityscapes(tmp_path, split="train")
    assert len(data) == 1 and data.info.num_classes == 19 and data.info.classes[13] == "car"
    assert data.group_of(0) == "aachen"  # a city is a group: Cityscapes' val cities are not its train cities
    assert data.raw(0)[1].tolist() == [[0, 13, 255, 18], [11, 255, 10, 255]]
    with pytest.raises(DataError, match=r"leftImg8bit/val.*gtFine/val"):
        Cityscapes(tmp_path, split="val")


def test_cityscapes_missing_label_file(tmp_path):
    write_rgb(tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_000001_000019_leftImg8bit.png", 2, 4)
    (tmp_path / "gtFine" / "val" / "bonn").mkdir(parents=True)
    with pytest.raises(DataError, match="bonn_000001_000019_gtFine_labelIds.png"):
        Cityscapes(tmp_path, split="val")


def test_voc_keeps_255_as_ignore(tmp_path):
    devkit = tmp_path / "VOCdevkit" / "VOC2012"
    (devkit / "JPEGImages").mkdir(parents=True)
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(devkit / "JPEGImages" / "2007_000032.jpg")
    label = Image.fromarray(np.array([[0, 1, 255, 20]] * 6, np.uint8).repeat(2, 1), mode="P")
    label.putpalette([v for colour in voc_palette(256) for v in colour])
    (devkit / "SegmentationClass").mkdir()
    label.save(devkit / "SegmentationClass" / "2007_000032.png")
    (devkit / "ImageSets" / "Segmentation").mkdir(parents=True)
    (devkit / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    data = PascalVOC(tmp_path, split="train")
    assert len(data) == 1 and data.name_of(0) == "2007_000032" and data.info.num_classes == 21
    _, mask = data.raw(0)
    assert mask[0].tolist() == [0, 0, 1, 1, 255, 255, 20, 20]
    _, y = data[0]
    assert int((y == 255).sum()) == 12
    with pytest.raises(DataError, match=r"ImageSets/Segmentation/val\.txt"):
        PascalVOC(tmp_path, split="val")
    with pytest.raises(DataError, match="VOC2012 folder itself"):
        PascalVOC(devkit, split="train")


# --- registry ------------------------------------------------------------------------------------------------------


def test_build_dataset(tmp_path):
    assert set(list_datasets()) == {"synthetic", "camvid", "cityscapes", "voc", "folder"}
    data = build_dataset("synthetic", split="val", length=3, size=(32, 32), seed=2)
    assert isinstance(data, SyntheticSegmentation) and len(data) == 3 and data.seed == 2
    camvid = build_dataset("camvid", root=camvid_layout(tmp_path / "camvid"), split="train")
    assert isinstance(camvid, CamVid) and len(camvid) == 2
    with pytest.raises(DataError, match="unknown dataset 'kitti'; choose one of: synthetic, camvid"):
        build_dataset("kitti", split="train")
    with pytest.raises(DataError, match="pass root="):
        build_dataset("folder", split="train")
    with pytest.raises(DataError, match="reads no files"):
        build_dataset("synthetic", root=tmp_path, split="train")
    with pytest.raises(DataError, match="no option.* lenght; it takes: length, size"):
        build_dataset("synthetic", split="train", lenght=3)


def test_pad_collate_in_a_dataloader(tmp_path):
    root = tmp_path / "ds"
    folder_dataset(root, stems=("a",), height=10, width=14)
    write_rgb(root / "images" / "b.png", 12, 9)
    write_label(root / "masks" / "b.png", np.ones((12, 9)))
    data = FolderDataset(root)
    loader = DataLoader(data, batch_size=2, collate_fn=functools.partial(pad_collate, ignore_index=255))
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 12, 14) and masks.shape == (2, 12, 14) and masks[1, :, 9:].eq(255).all()


# --- groups (scenes) and selections ---------------------------------------------------------------------------------


def test_camvid_groups_are_drives_and_selections_pool_splits_and_keep_groups(tmp_path):
    root = tmp_path / "camvid"
    for split, stems in (("train", ["0016E5_07920", "0006R0_f00930", "0001TP_006690"]), ("val", ["0016E5_07959"])):
        for stem in stems:
            write_rgb(root / split / f"{stem}.png")
            write_label(root / f"{split}annot" / f"{stem}.png", np.zeros((12, 16)))
    train = CamVid(root, split="train")
    assert [train.group_of(i) for i in range(3)] == ["0001TP", "0006R0", "0016E5"]
    pooled = build_dataset("camvid", root=root, split="train+val", groups=("0016E5", "0001TP"))
    assert [pooled.name_of(i) for i in range(len(pooled))] == [
        "0001TP_006690.png",
        "0016E5_07920.png",
        "0016E5_07959.png",
    ]
    assert pooled.split_of(2) == "val" and pooled.files_of(2)[0].endswith("val/0016E5_07959.png")
    image, mask = pooled[0]
    assert image.shape == (3, 12, 16) and mask.shape == (12, 16) and pooled.size_of(2) == (12, 16)
    with pytest.raises(DataError, match=r"holds no image of group\(s\) Seq05VD; its groups are: 0001TP \(1\)"):
        build_dataset("camvid", root=root, split="train", groups=("Seq05VD",))


def test_a_folder_dataset_reads_groups_from_a_pattern_or_a_file_and_names_what_is_wrong(tmp_path):
    head = "classes: [background, road, car]\n"
    root = folder_dataset(
        tmp_path / "p", stems=("siteA_1", "siteA_2", "siteB_1"), yaml=head + "group_pattern: '^([^_]+)_'\n"
    )
    data = FolderDataset(root)
    assert [data.group_of(i) for i in range(3)] == ["siteA", "siteA", "siteB"]
    listed = folder_dataset(tmp_path / "f", stems=("a", "b"), yaml=head + "group_file: groups.csv\n")
    (listed / "groups.csv").write_text("a,morning\nb,night\n")
    assert [FolderDataset(listed).group_of(i) for i in range(2)] == ["morning", "night"]
    (listed / "groups.csv").write_text("a,morning\n")
    with pytest.raises(DataError, match=r"groups.csv: no group for 1 image\(s\): b"):
        FolderDataset(listed)
    bad = folder_dataset(tmp_path / "b", stems=("x1",), yaml=head + "group_pattern: '^site'\n")
    with pytest.raises(DataError, match="does not match image 'x1'"):
        FolderDataset(bad)
    plain = folder_dataset(tmp_path / "n", stems=("a",))
    assert FolderDataset(plain).group_of(0) == "all"
