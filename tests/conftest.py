from pathlib import Path

import pytest

from wildmix import corpus

TEST_AUDIO = Path(__file__).parent / "data"  # see data/LICENCE.md


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The tiny corpus built from the committed test audio: no Debian package needed."""
    root = tmp_path_factory.mktemp("corpus") / "tiny"
    corpus.build(root, size="tiny", seed=0, sources=TEST_AUDIO)
    return root


@pytest.fixture(scope="session")
def tiny_sounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "sounds"
    corpus.build(root, size="tiny", seed=0, kind="sounds", sources=TEST_AUDIO)
    return root


def _needs_packages(size: str, kind: str) -> None:
    missing = corpus.missing_packages(size, kind)
    if missing:
        pytest.skip(f"the Debian build needs {' '.join(missing)} (make debs-tiny)")


@pytest.fixture(scope="session")
def debian_tiny_corpus(tmp_path_factory):
    """The tiny corpus as users build it: flite and the installed noise packages."""
    _needs_packages("tiny", "speech")
    root = tmp_path_factory.mktemp("corpus") / "debian-tiny"
    corpus.build(root, size="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def debian_tiny_sounds(tmp_path_factory):
    _needs_packages("tiny", "sounds")
    root = tmp_path_factory.mktemp("corpus") / "debian-sounds"
    corpus.build(root, size="tiny", seed=0, kind="sounds")
    return root
