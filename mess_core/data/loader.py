"""DataLoaders whose data errors read as the plain message, with or without worker processes.

A :class:`~mess_core.errors.MessError` raised by a dataset inside a DataLoader worker reaches the main process
re-raised by torch (``ExceptionWrapper.reraise``) with the worker's whole traceback as its message: forty lines where
one names the bad file. So the dataset is wrapped: in the worker, a MessError becomes a :class:`_Failed` sample (the
error object itself, which pickles as its type and message); the collate function passes a batch holding one through
unchanged; and the loader raises that error again in the main process, as the engine raised it. Any other exception
(a bug) still travels torch's way, traceback included. The same path is taken without workers, so there is one way.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, Dataset

from ..errors import MessError

__all__ = ["plain_error_loader"]


class _Failed:
    """A sample (or batch) that could not be loaded: the engine's error, raised again by the main process."""

    def __init__(self, error: MessError) -> None:
        self.error = error


class _Catching(Dataset):
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except MessError as exc:
            return _Failed(exc)


class _PassFailures:
    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate  # a class, not a closure, so that worker processes started by spawn can pickle it

    def __call__(self, batch: list[Any]) -> Any:
        failed = next((sample for sample in batch if isinstance(sample, _Failed)), None)
        return failed if failed is not None else self.collate(batch)


class _PlainErrorLoader(DataLoader):
    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if isinstance(batch, _Failed):
                raise batch.error from None
            yield batch


def plain_error_loader(dataset: Any, *, collate_fn: Callable[[list[Any]], Any], **options: Any) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` of ``dataset`` (``options`` as DataLoader takes them) that raises a
    dataset's :class:`~mess_core.errors.MessError` in the main process with its own message, not a worker's
    traceback."""
    return _PlainErrorLoader(_Catching(dataset), collate_fn=_PassFailures(collate_fn), **options)
