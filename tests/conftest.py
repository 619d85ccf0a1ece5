import pytest

from wildmix import corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The tiny built-in corpus, built once per test session (a few seconds)."""
    root = tmp_path_factory.mktemp("corpus") / "tiny"
    corpus.build(root, size="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_sounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "sounds"
    corpus.build(root, size="tiny", seed=0, kind="sounds")
    return root
