import subprocess
import sys

from wildmix.cli import main


def test_help_does_not_import_torch():
    code = ("import sys, wildmix.cli\n"
            "try:\n    wildmix.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported for --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_public_api_names():
    import wildmix

    assert callable(wildmix.mixit_loss) and callable(wildmix.Enhancer)
    assert wildmix.mixit_loss.__module__ == "wildmix.mixit"


def test_corpus_packages_command(capsys):
    assert main(["corpus", "packages", "--size", "tiny"]) == 0
    assert capsys.readouterr().out.split() == ["flite", "qabcs-data"]
