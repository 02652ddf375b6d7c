"""Fixtures shared by the test modules."""

import pytest

from svhn_vae.data.fakes import write_fake_split


@pytest.fixture
def data_dir(tmp_path):
    """A small fake MNIST in the official layout: 96 training and 24 test images."""
    folder = tmp_path / "data"
    write_fake_split("mnist", "train", folder, num_examples=96, seed=1)
    write_fake_split("mnist", "test", folder, num_examples=24, seed=2)
    return folder
