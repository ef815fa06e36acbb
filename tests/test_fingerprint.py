from __future__ import annotations

import numpy as np
import pytest

from genesis_core.fingerprint import canonical_json, fingerprint, fingerprint_arrays


def test_canonical_json_is_independent_of_key_order_and_number_types():
    a = {"b": 1.0, "a": [1, 2.5, {"y": np.float64(0.1), "x": -0.0}]}
    b = {"a": (np.int64(1), 2.5, {"x": 0.0, "y": 0.1}), "b": 1.0}
    assert canonical_json(a) == canonical_json(b) == '{"a":[1,2.5,{"x":0.0,"y":0.1}],"b":1.0}'
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint({"b": 1.0000000001}) != fingerprint({"b": 1.0})


def test_non_finite_and_unknown_values_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        fingerprint({"x": float("nan")})
    with pytest.raises(TypeError, match="object"):
        fingerprint({"x": object()})


def test_array_fingerprints_cover_dtype_shape_and_label():
    x = np.arange(6, dtype=np.float64)
    assert fingerprint_arrays(x) == fingerprint_arrays(x.copy())
    assert fingerprint_arrays(x) != fingerprint_arrays(x.astype(np.float32))
    assert fingerprint_arrays(x) != fingerprint_arrays(x.reshape(2, 3))
    assert fingerprint_arrays(x, label="a") != fingerprint_arrays(x, label="b")
