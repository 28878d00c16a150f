"""flrd.state_file: atomic saves, and damaged files fail with one named error."""

import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flrd import state_file
from flrd.state_file import StateError, StateFileError, load_state, save_state


def saved(tmp_path, state=None):
    arrays = {"fc1.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array([3], dtype=np.int64)}
    save_state(tmp_path, arrays, state if state is not None else {"rounds-completed": 4, "policy.best_loss": np.inf})
    return arrays


def test_round_trip_keeps_arrays_dtypes_and_non_finite_floats(tmp_path):
    arrays = saved(tmp_path, {"rounds-completed": 4, "policy.best_loss": float("inf"),
                              "policy.smoothed_loss": float("nan"), "policy.sx2": [1.0, 2.0]})
    loaded, state = load_state(tmp_path)
    assert loaded.keys() == arrays.keys()
    for name in arrays:
        assert loaded[name].dtype == arrays[name].dtype and np.array_equal(loaded[name], arrays[name])
    assert state["rounds-completed"] == 4 and state["policy.best_loss"] == np.inf
    assert np.isnan(state["policy.smoothed_loss"]) and state["policy.sx2"] == [1.0, 2.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "state.json"]  # no temp files left


def test_interrupted_save_keeps_old_files_and_a_torn_pair_is_detected(tmp_path, monkeypatch):
    saved(tmp_path, {"rounds-completed": 1})
    real_replace = os.replace

    def crash_on_state(src, dst):
        if str(dst).endswith(state_file.STATE_FILE):
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_state)
    with pytest.raises(OSError, match="power cut"):
        save_state(tmp_path, {"fc1.weight": np.zeros(2)}, {"rounds-completed": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "state.json"]  # temp file removed
    assert json.loads((tmp_path / "state.json").read_text())["state"] == {"rounds-completed": 1}
    with pytest.raises(StateFileError, match="model_sha256") as err:
        load_state(tmp_path)  # new model.npz with the old state.json: refused, not resumed
    assert err.value.file.endswith("model.npz") and err.value.field == "model_sha256"


@pytest.mark.parametrize("missing", ["model.npz", "state.json"])
def test_missing_file_is_named(tmp_path, missing):
    saved(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(StateFileError, match="missing") as err:
        load_state(tmp_path)
    assert err.value.file.endswith(missing)


def envelope(tmp_path):
    return json.loads((tmp_path / "state.json").read_text())


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda text, env: text[: len(text) // 2], "(file)"),  # truncated
        (lambda text, env: "\x00garbage{", "(file)"),
        (lambda text, env: "[1, 2, 3]", "(top level)"),
        (lambda text, env: json.dumps({**env, "format": "other"}), "format"),
        (lambda text, env: json.dumps({**env, "version": 99}), "format"),
        (lambda text, env: json.dumps({**env, "state": "rounds=3"}), "state"),
        (lambda text, env: json.dumps({**env, "model_sha256": 12}), "model_sha256"),
        (lambda text, env: json.dumps({**env, "model_sha256": "0" * 64}), "model_sha256"),
    ],
)
def test_damaged_state_json_names_file_and_field(tmp_path, damage, field):
    saved(tmp_path)
    path = tmp_path / "state.json"
    path.write_text(damage(path.read_text(), envelope(tmp_path)))
    with pytest.raises(StateFileError) as err:
        load_state(tmp_path)
    assert err.value.field == field and str(path) in str(err.value)


def replace_model(tmp_path, data: bytes):
    (tmp_path / "model.npz").write_bytes(data)
    env = envelope(tmp_path)
    env["model_sha256"] = hashlib.sha256(data).hexdigest()  # consistent digest: the npz itself is bad
    (tmp_path / "state.json").write_text(json.dumps(env))


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_npz_is_named(tmp_path, how):
    saved(tmp_path)
    data = (tmp_path / "model.npz").read_bytes()
    replace_model(tmp_path, {"truncated": data[: len(data) // 2], "garbage": os.urandom(300), "empty": b""}[how])
    with pytest.raises(StateFileError, match="npz") as err:
        load_state(tmp_path)
    assert err.value.file.endswith("model.npz")


def test_object_arrays_are_refused_on_save_and_on_load(tmp_path):
    with pytest.raises(ValueError, match="numeric"):
        save_state(tmp_path, {"w": np.array(["a"], dtype=object)}, {})
    saved(tmp_path)
    import io
    buffer = io.BytesIO()
    np.savez(buffer, w=np.array(["abc"]))
    replace_model(tmp_path, buffer.getvalue())
    with pytest.raises(StateFileError, match="numeric") as err:
        load_state(tmp_path)
    assert err.value.field == "w"


def test_unserializable_state_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON-serializable"):
        save_state(tmp_path, {"w": np.zeros(1)}, {"ids": {1, 2}})
    assert not (tmp_path / "state.json").exists()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(which=st.sampled_from(["model.npz", "state.json"]), cut=st.integers(0, 10_000),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4))
def test_any_damage_gives_state_file_error_or_the_saved_content(tmp_path_factory, which, cut, flips):
    folder = tmp_path_factory.mktemp("fuzz")
    arrays = saved(folder)
    path = folder / which
    data = bytearray(path.read_bytes())
    for position, mask in flips:
        if data:
            data[position % len(data)] ^= mask
    path.write_bytes(bytes(data[: cut % (len(data) + 1)]))
    try:
        loaded, state = load_state(folder)
    except StateFileError:
        return
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)  # undamaged in effect


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        (lambda: state_file.require_int({"rounds": -7}, "rounds", minimum=0), "rounds", ">= 0"),
        (lambda: state_file.require_int({"rounds": 2.5}, "rounds"), "rounds", "integer"),
        (lambda: state_file.require_int({"rounds": True}, "rounds"), "rounds", "integer"),
        (lambda: state_file.require_int({}, "rounds"), "rounds", "missing"),
        (lambda: state_file.require_float({"cap": -5.0}, "cap", low=0, low_open=True), "cap", r"\(0"),
        (lambda: state_file.require_float({"cap": float("nan")}, "cap"), "cap", "NaN"),
        (lambda: state_file.require_float({"cap": float("inf")}, "cap"), "cap", "finite"),
        (lambda: state_file.require_float({"cap": "1"}, "cap"), "cap", "number"),
        (lambda: state_file.require_float_list({"s2": [1.0]}, "s2", lengths=(0, 2)), "s2", "length 0 or 2"),
        (lambda: state_file.require_float_list({"s2": [1.0, "x"]}, "s2", lengths=(2,)), "s2", "list of numbers"),
        (lambda: state_file.require_float_list({"s2": [1.0, -1.0]}, "s2", lengths=(2,), low=0), "s2", ">= 0"),
        (lambda: state_file.require_int([1], "rounds"), "(state)", "mapping"),
    ],
)
def test_value_checks_raise_state_error_naming_the_field(call, field, message):
    with pytest.raises(StateError, match=message) as err:
        call()
    assert err.value.field == field and isinstance(err.value, ValueError)
