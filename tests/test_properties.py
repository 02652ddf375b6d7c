"""Property-based tests (hypothesis): config validation, the PCA round trip, readers on random bytes."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svhn_vae.config import SECTIONS, Config, get_preset
from svhn_vae.data.readers import read_idx, read_svhn_mat
from svhn_vae.errors import UserError
from svhn_vae.pca import PCA

FIELDS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(-5, 5000), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(FIELDS), value=ANY_VALUE)
def test_any_config_value_is_accepted_or_refused_naming_the_field(field, value):
    section, name = field
    values = get_preset("fast").to_dict()
    values[section][name] = value
    try:
        cfg = Config.from_dict(values)
    except UserError as e:
        assert f"{section}.{name}" in str(e) or "complement" in str(e) or "likelihood" in str(e)
        assert "\n" not in str(e)
        return
    # accepted: the value kept its meaning and every float is a number (logvar_min may be -inf)
    kept = getattr(getattr(cfg, section), name)
    if field == ("train", "compile") and isinstance(value, bool):  # configs written when it was a bool
        value = "on" if value else "off"
    assert kept == value or kept == tuple(value) or (isinstance(kept, float) and kept == float(value))
    for f in dataclasses.fields(cfg.train):
        v = getattr(cfg.train, f.name)
        assert not isinstance(v, float) or math.isfinite(v)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(3, 40), d=st.integers(1, 12), whiten=st.booleans(), seed=st.integers(0, 2**16),
       scale=st.floats(1e-3, 1e3))
def test_pca_with_every_component_round_trips(n, d, whiten, seed, scale):
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)) * scale + 3.0)
    k = min(n, d)
    pca = PCA(k, whiten=whiten).fit(x)
    if whiten and float(pca.explained_variance_.min()) < 1e-9 * scale**2:
        return  # a direction without variance cannot be whitened (Representation refuses it)
    back = pca.inverse_transform(pca.transform(x))
    assert torch.allclose(back, x, atol=1e-7 * scale * max(1.0, math.sqrt(d)) * 100)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), gzipped=st.booleans())
def test_idx_reader_on_random_bytes_names_the_file_and_deletes_nothing(tmp_path, data, gzipped):
    import gzip

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    try:
        array = read_idx(path)
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:  # random bytes that happen to be a valid IDX file of unsigned bytes
        assert array.dtype == np.uint8
    assert path.exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), header=st.booleans())
def test_svhn_reader_on_random_bytes_names_the_file_and_deletes_nothing(tmp_path, data, header):
    path = tmp_path / "test_32x32.mat"
    prefix = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x01IM" if header else b""
    path.write_bytes(prefix + data)
    with pytest.raises(UserError, match="test_32x32.mat"):
        read_svhn_mat(path)
    assert path.exists()


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """The bytes of a valid small SVHN .mat file and of a valid MNIST IDX images file."""
    from svhn_vae.data.fakes import write_fake_split

    folder = tmp_path_factory.mktemp("valid")
    write_fake_split("svhn", "test", folder, num_examples=3)
    write_fake_split("mnist", "test", folder, num_examples=3)
    return {"mat": (folder / "test_32x32.mat").read_bytes(),
            "idx": next(folder.glob("t10k-images-idx3-ubyte*")).read_bytes()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["mat", "idx"]), cut=st.floats(0.0, 0.999))
def test_truncated_files_are_named_and_kept(tmp_path, valid_files, kind, cut):
    data = valid_files[kind]
    path = tmp_path / ("test_32x32.mat" if kind == "mat" else "t10k-images-idx3-ubyte")
    path.write_bytes(data[:int(cut * len(data))])
    with pytest.raises(UserError, match=path.name):
        read_svhn_mat(path) if kind == "mat" else read_idx(path)
    assert path.exists()
