"""Saved run state: the model's arrays and a JSON state, written atomically, read back checked.

A state directory holds two files:

- ``model.npz``: the model's arrays (``numpy.savez``, loaded without pickle);
- ``state.json``: ``{"format": "flrd-state", "version": 1, "model_sha256": ..., "state": {...}}``.
  ``state`` is whatever the components returned from their ``state_dict()``; Python's
  JSON dialect is used, so ``Infinity`` and ``NaN`` survive the round trip.

Each file is written to a temporary file in the same directory, flushed and fsynced,
then moved into place with ``os.replace`` and the directory fsynced: a crash leaves
either the old or the new file, never a torn one. ``state.json`` is written last and
records the SHA-256 of ``model.npz``, so a crash between the two renames (new model,
old state) is detected on load instead of resuming a mismatched pair.

:func:`load_state` checks the files' structure and raises :class:`StateFileError`
naming the file and the field. The *values* are checked by each component's
``load_state_dict`` (e.g. :meth:`flrd.policy.RatePolicy.load_state_dict`), which
raises :class:`StateError` naming the field; the ``require_*`` helpers here do that.

Examples
--------
>>> import tempfile, numpy as np
>>> folder = tempfile.mkdtemp()
>>> save_state(folder, {"w": np.ones(3)}, {"rounds-completed": 2})
>>> arrays, state = load_state(folder)
>>> arrays["w"].tolist(), state["rounds-completed"]
([1.0, 1.0, 1.0], 2)
>>> require_int(state, "rounds-completed", minimum=0)
2
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "MODEL_FILE",
    "STATE_FILE",
    "StateError",
    "StateFileError",
    "load_state",
    "require_float",
    "require_float_list",
    "require_int",
    "save_state",
]

MODEL_FILE = "model.npz"
STATE_FILE = "state.json"
_FORMAT, _VERSION = "flrd-state", 1


class StateError(ValueError):
    """A saved state is unusable; ``field`` names the offending entry."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"state field {field!r}: {problem}")
        self.field = field


class StateFileError(StateError):
    """A state file is missing or damaged; ``file`` is its path, ``field`` the entry."""

    def __init__(self, file: str | os.PathLike[str], field: str, problem: str) -> None:
        ValueError.__init__(self, f"{file}: field {field!r}: {problem}")
        self.file, self.field = str(file), field


# ------------------------------------------------------------------------- write
def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_state(directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
               state: Mapping[str, object]) -> None:
    """Write ``model.npz`` and ``state.json`` into ``directory`` (created if needed), atomically.

    Raises ``ValueError`` if an array is not numeric or ``state`` is not JSON-serializable.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        if np.asarray(value).dtype.kind not in "biuf":
            raise ValueError(f"array {name!r} must be numeric, got dtype {np.asarray(value).dtype}")
    buffer = io.BytesIO()  # in memory, so the digest is of the exact bytes written
    # ignore: numpy's stub types **kwds as possibly savez's own ``allow_pickle: bool``
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})  # type: ignore[arg-type]
    model = buffer.getvalue()
    try:
        text = json.dumps({"format": _FORMAT, "version": _VERSION,
                           "model_sha256": hashlib.sha256(model).hexdigest(), "state": dict(state)})
    except TypeError as err:
        raise ValueError(f"state must be JSON-serializable: {err}") from err
    _write_atomic(folder / MODEL_FILE, model)
    _write_atomic(folder / STATE_FILE, text.encode("utf-8"))  # the commit point
    _fsync_dir(folder)


# -------------------------------------------------------------------------- read
def load_state(directory: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read what :func:`save_state` wrote: ``(arrays, state)``.

    Raises :class:`StateFileError` naming the file and field for a missing file, bad
    JSON, a wrong type, a damaged or mismatched ``model.npz``, or a non-numeric array.
    """
    folder = Path(directory)
    state_path, model_path = folder / STATE_FILE, folder / MODEL_FILE
    try:
        text = state_path.read_text(encoding="utf-8")
        model = model_path.read_bytes()
    except FileNotFoundError as err:
        raise StateFileError(err.filename, "(file)", "missing") from err
    except (OSError, UnicodeDecodeError) as err:
        raise StateFileError(state_path, "(file)", f"unreadable: {err}") from err
    try:
        envelope = json.loads(text)
    except json.JSONDecodeError as err:
        raise StateFileError(state_path, "(file)", f"not valid JSON: {err}") from err
    if not isinstance(envelope, dict):
        raise StateFileError(state_path, "(top level)", f"must be an object, got {type(envelope).__name__}")
    if envelope.get("format") != _FORMAT or envelope.get("version") != _VERSION:
        raise StateFileError(state_path, "format",
                             f"expected {_FORMAT!r} version {_VERSION}, got "
                             f"{envelope.get('format')!r} version {envelope.get('version')!r}")
    state = envelope.get("state")
    if not isinstance(state, dict):
        raise StateFileError(state_path, "state", f"must be an object, got {type(state).__name__}")
    digest = envelope.get("model_sha256")
    if not isinstance(digest, str):
        raise StateFileError(state_path, "model_sha256", f"must be a string, got {digest!r}")
    if hashlib.sha256(model).hexdigest() != digest:
        raise StateFileError(model_path, "model_sha256",
                             f"does not match the digest in {state_path} (damaged, or a save was interrupted)")
    return _read_npz(model_path), state


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise StateFileError(path, "(file)", f"not a readable npz archive: {err}") from err
    for name, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise StateFileError(path, name, f"must be numeric, got dtype {value.dtype}")
    return arrays


# ----------------------------------------------------------------- value checks
def require_int(state: Mapping[str, object], field: str, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
    """``state[field]`` as an ``int`` (an integral float is accepted), else :class:`StateError`."""
    value = _get(state, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or float(value) != int(value):
        raise StateError(field, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise StateError(field, f"must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise StateError(field, f"must be <= {maximum}, got {value!r}")
    return int(value)


def require_float(state: Mapping[str, object], field: str, *, low: float = -math.inf,
                  high: float = math.inf, low_open: bool = False, allow_nan: bool = False,
                  allow_inf: bool = False) -> float:
    """``state[field]`` as a ``float`` within ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    value = _get(state, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(field, f"must be a number, got {value!r}")
    out = float(value)
    if math.isnan(out):
        if allow_nan:
            return out
        raise StateError(field, "must not be NaN")
    if math.isinf(out) and not allow_inf:
        raise StateError(field, f"must be finite, got {out!r}")
    if out < low or out > high or (low_open and out == low):
        left = "(" if low_open else "["
        raise StateError(field, f"must be in {left}{low:g}, {high:g}], got {out!r}")
    return out


def require_float_list(state: Mapping[str, object], field: str, *, lengths: tuple[int, ...],
                       low: float = -math.inf) -> np.ndarray:
    """``state[field]`` as a finite float64 array whose length is one of ``lengths``, all >= ``low``."""
    value = _get(state, field)
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise StateError(field, f"must be a list of numbers, got {value!r:.80}")
    if len(value) not in lengths:
        raise StateError(field, f"must have length {' or '.join(map(str, lengths))}, got {len(value)}")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < low):
        raise StateError(field, f"must hold finite numbers >= {low:g}, got {value!r:.80}")
    return arr


def _get(state: Mapping[str, object], field: str) -> object:
    if not isinstance(state, Mapping):
        raise StateError("(state)", f"must be a mapping, got {type(state).__name__}")
    if field not in state:
        raise StateError(field, "missing")
    return state[field]
