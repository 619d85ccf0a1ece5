"""The catalogue: every source of the built-in corpus and of the sound library.

First the sound library: every recorded noise wildmix trains, chooses and tests on.

One row per source: the Debian package, where its sounds lie inside it (a glob under the
package's root; ``ARCHIVE::GLOB`` for members of a zip archive; ``.cat`` for OpenTTD's
sound catalogue), the kind of sound, the licence, and the split. Splits leave whole
packages out: no package that trains a model is in its valid or test split, so those
measure noise the model has never heard. Voices, sentences and game dialogue are left out
of the globs (the model must keep speech, not remove it).

The packages that ../shared/DATA.md reserves for independent evaluation are never listed
here, nor named anywhere in the project.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

SOUND_KINDS = ("ambience", "animals", "vehicles", "machines", "music", "effects")


@dataclass(frozen=True)
class Sound:
    package: str
    where: str  # glob under the package root; "ARCHIVE::GLOB" for zip members
    kind: str
    split: str  # train | valid | test
    licence: str
    exclude: str = ""  # a substring of paths to leave out (voices)


_0AD = "usr/share/games/0ad/mods/public/public.zip::audio/"
_HW = "usr/share/games/hedgewars/Data/"
_WL = "usr/share/games/widelands/data/"
_STK = "usr/share/games/supertuxkart/data/"
_FG = "usr/share/games/flightgear/"
_WZ = "usr/share/games/warzone2100/base.wz::audio/sfx/"
_S3D = "usr/share/games/scorched3d/data/globalmods/"
_GPL2 = "GPL-2+"

LIBRARY = [
    # --- train: twelve packages -------------------------------------------------------
    Sound("0ad-data", _0AD + "ambient/*/*.ogg", "ambience", "train", "CC-BY-SA-3.0 / GPL-2+"),
    Sound("0ad-data", _0AD + "actor/fauna/*.ogg", "animals", "train", "CC-BY-SA-3.0 / GPL-2+"),
    Sound("0ad-data", _0AD + "music/*.ogg", "music", "train", "CC-BY-SA-3.0 / GPL-2+"),
    Sound("0ad-data", _0AD + "resource/*/*.ogg", "machines", "train", "CC-BY-SA-3.0 / GPL-2+"),
    Sound("0ad-data", _0AD + "attack/*/*.ogg", "effects", "train", "CC-BY-SA-3.0 / GPL-2+"),
    Sound("hedgewars-data", _HW + "Music/*.ogg", "music", "train", "GPL-2 / CC-BY-SA-3.0"),
    Sound("hedgewars-data", _HW + "Sounds/*.ogg", "effects", "train", "GPL-2 / CC-BY-SA-3.0"),
    Sound("widelands-data", _WL + "music/*.ogg", "music", "train", _GPL2),
    Sound("widelands-data", _WL + "sound/animals/*.ogg", "animals", "train", _GPL2),
    Sound("widelands-data", _WL + "sound/**/*.ogg", "machines", "train", _GPL2,
          exclude="/animals/"),
    Sound("supertux-data", "usr/share/games/supertux2/music/**/*.ogg", "music", "train",
          "GPL-2+ / CC-BY-SA-3.0"),
    Sound("supertux-data", "usr/share/games/supertux2/sounds/*.*", "effects", "train",
          "GPL-2+ / CC-BY-SA-3.0"),
    Sound("supertuxkart-data", _STK + "music/*.ogg", "music", "train", "CC-BY-SA-3.0 / CC0"),
    Sound("supertuxkart-data", _STK + "sfx/*.ogg", "vehicles", "train", "CC-BY-SA-3.0 / CC0"),
    Sound("supertuxkart-data", _STK + "tracks/*/*.ogg", "ambience", "train",
          "CC-BY-SA-3.0 / CC0"),
    Sound("flightgear-data-base", _FG + "Aircraft/c172p/Sounds/*.wav", "vehicles", "train",
          _GPL2),
    Sound("flightgear-data-base", _FG + "Sounds/*.wav", "ambience", "train", _GPL2),
    Sound("warzone2100-data", _WZ + "*/*.ogg", "vehicles", "train", _GPL2),
    Sound("qabcs-data", "usr/share/qabcs/abcs/all/noises/*.ogg", "animals", "train",
          "GPL-3+ / CC0-1.0"),
    Sound("bucklespring-data", "usr/share/buckle/wav/*.wav", "machines", "train", _GPL2),
    Sound("sonic-pi-samples", "usr/share/sonic-pi/samples/*.flac", "music", "train",
          "CC0 / CC-BY-SA-4.0"),
    Sound("wesnoth-1.16-data", "usr/share/games/wesnoth/1.16/data/core/sounds/ambient/*.ogg",
          "ambience", "train", _GPL2),
    Sound("redeclipse-data", "usr/share/games/redeclipse/data/sounds/ambience/*.ogg",
          "ambience", "train", "CC-BY-SA-3.0 / CC-BY-3.0"),
    # --- valid: four packages that never train ------------------------------------------
    Sound("scorched3d-data", _S3D + "*/data/wav/*/*.wav", "effects", "valid",
          "GPL-2+ / CC-BY-SA-3"),
    Sound("scorched3d-data", _S3D + "*/data/music/*.ogg", "music", "valid",
          "GPL-2+ / CC-BY-SA-3"),
    Sound("endless-sky-data", "usr/share/games/endless-sky/sounds/*.*", "vehicles", "valid",
          "CC-BY-SA-4.0 / public domain"),
    Sound("lugaru-data", "usr/share/games/lugaru/Sounds/*.ogg", "ambience", "valid",
          "CC-BY-SA-3.0 / GPL-2+"),
    Sound("extremetuxracer-data", "usr/share/games/etr/music/*.ogg", "music", "valid",
          "GPL-2+ / CC0"),
    Sound("extremetuxracer-data", "usr/share/games/etr/sounds/*.*", "effects", "valid",
          "GPL-2+ / CC0"),
    # --- test: four packages that never train or choose (bench_adapt's new noise too) ---
    Sound("freedink-data", "usr/share/games/dink/dink/Sound/*.*", "effects", "test",
          "GPL-3+"),
    Sound("openttd-opensfx", "usr/share/games/openttd/baseset/opensfx/opensfx.cat",
          "vehicles", "test", "CC-BY-SA-3.0 / GPL-2+"),
    Sound("xmoto-data", "usr/share/games/xmoto/Textures/Musics/*.ogg", "music", "test",
          _GPL2),
    Sound("minetest-data", "usr/share/games/minetest/games/minetest_game/mods/*/sounds/*.ogg",
          "ambience", "test", "CC-BY-SA-3.0 / CC0"),
]

assert all(s.kind in SOUND_KINDS for s in LIBRARY)
assert all(len({s.split for s in LIBRARY if s.package == p}) == 1  # whole packages
           for p in {s.package for s in LIBRARY})


def packages(split: str | None = None) -> list[str]:
    """The library's packages (of one split), in catalogue order."""
    return list(dict.fromkeys(s.package for s in LIBRARY if split in (None, s.split)))


def fingerprint(sounds: list[Sound] = LIBRARY) -> str:
    """A hash of the catalogue: the cache rebuilds itself when it changes."""
    text = json.dumps([asdict(s) for s in sounds], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the built-in corpus: its packages, voices and sizes --------------------------------


SPLITS = ("train", "valid", "test")
KINDS = ("speech", "sounds")


class CorpusError(RuntimeError):
    """A corpus cannot be built here (missing packages, bad arguments)."""


@dataclass(frozen=True)
class Package:
    name: str
    licence: str
    # a glob that matches only files this package installs, for systems without dpkg (a
    # folder that sibling packages also create, such as another language pack's, is no proof)
    probe: str


PACKAGES = {
    p.name: p
    for p in [
        Package("flite", "BSD-style (CMU Flite); /usr/share/doc/flite/copyright", "/usr/bin/flite"),
        Package("festival", "BSD-style (CSTR); /usr/share/doc/festival/copyright",
                "/usr/bin/festival"),
        Package("festvox-us-slt-hts", "BSD-3-clause / EST-2003",
                "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"),
        Package("festvox-kallpc16k", "BSD-style (CMU)",
                "/usr/share/festival/voices/english/kal_diphone"),
        Package("festvox-kdlpc16k", "BSD-style (CMU)",
                "/usr/share/festival/voices/english/ked_diphone"),
        Package("espeak-ng", "GPL-3+", "/usr/bin/espeak-ng"),
        Package("fillets-ng-data-cs", "GPL-2+", "/usr/share/games/fillets-ng/sound/*/cs/*.ogg"),
        Package("qabcs-data", "GPL-3+ / CC0-1.0 / public domain",
                "/usr/share/qabcs/abcs/all/noises/*.ogg"),
        Package("bucklespring-data", "GPL-2+", "/usr/share/buckle/wav/*.wav"),
        Package("sonic-pi-samples", "CC0 / CC-BY-SA-4.0 / MIT",
                "/usr/share/sonic-pi/samples/*.flac"),
        Package("wesnoth-1.16-data", "GPL-2+",
                "/usr/share/games/wesnoth/1.16/data/core/sounds/ambient/*.ogg"),
        # recorded human speech (the 'real' size)
        *[Package(f"asterisk-core-sounds-{lang}-g722",
                  "CC-BY-3.0" if lang == "ru" else "CC-BY-SA-3.0",
                  f"/usr/share/asterisk/sounds/{folder}/*.g722")
          for lang, folder in (("en", "en_US_f_Allison"), ("es", "es_MX_f_Allison"),
                               ("fr", "fr_CA_f_June"), ("it", "it_IT_m_Carlo"),
                               ("ru", "ru_RU_f_IvrvoiceRU"))],
        Package("festvox-ru", "BSD-style (MSU), see /usr/share/doc/festvox-ru/copyright",
                "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav"),
        Package("ktuberling-data", "GPL-2+", "/usr/share/ktuberling/sounds/*/*.ogg"),
        Package("klettres-data", "GPL-2+", "/usr/share/klettres/*/alpha/*.ogg"),
        Package("redeclipse-data", "CC-BY-SA-3.0 / CC-BY-3.0 (Red Eclipse ambience)",
                "/usr/share/games/redeclipse/data/sounds/ambience/*.ogg"),
    ]
}


@dataclass(frozen=True)
class Voice:
    engine: str  # flite | festival | espeak | czech
    voice: str  # engine's voice name (czech: character code)
    speaker: str  # the person behind it: one speaker never spans two splits
    split: str

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"


# The same CMU ARCTIC speakers appear under flite and festival, so splits go by speaker.
VOICES = [
    Voice("flite", "slt", "slt", "train"),
    Voice("flite", "rms", "rms", "train"),
    Voice("flite", "awb", "awb", "valid"),
    Voice("flite", "kal16", "kal", "test"),
    Voice("festival", "voice_cmu_us_slt_arctic_hts", "slt", "train"),
    Voice("festival", "voice_ked_diphone", "ked", "train"),
    Voice("festival", "voice_kal_diphone", "kal", "test"),
    Voice("czech", "v", "fillets-big-fish", "train"),
    Voice("czech", "other", "fillets-other-characters", "valid"),
    Voice("czech", "m", "fillets-small-fish", "test"),
    Voice("espeak", "en-us+m3", "espeak-en-us-m3", "train"),
    Voice("espeak", "en+f2", "espeak-en-f2", "train"),
    Voice("espeak", "de+m1", "espeak-de-m1", "train"),
    Voice("espeak", "fr+f3", "espeak-fr-f3", "train"),
    Voice("espeak", "en-gb-scotland+m2", "espeak-en-gb-scotland-m2", "valid"),
    Voice("espeak", "es+f4", "espeak-es-f4", "test"),
]
# Real voices (the 'real' size): professional prompts (Asterisk, five speakers; en and es
# are one speaker, Allison), a Russian studio voice (festvox-ru), Czech game dialogue, and
# isolated words of the KDE games KTuberling and KLettres, one folder per language. Words
# are split by language across both games, so that a speaker who recorded for both stays in
# one split. Valid and test hold real voices only, in languages and voices that never train.
ASTERISK_ROOT = "/usr/share/asterisk/sounds"
KTUBERLING_ROOT = "/usr/share/ktuberling/sounds"
KLETTRES_ROOT = "/usr/share/klettres"
FESTVOX_RU = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
WORD_SPLITS = {"it": "test", "pt": "test", "pt_BR": "test", "sl": "test", "hu": "test",
               "ro": "test", "fr": "valid", "fi": "valid", "he": "valid", "gl": "valid"}
WORD_LANGUAGES = {  # engine -> languages (folders); the rest of a folder list is not speech
    "ktuberling": ("ca", "da", "de", "el", "en", "es", "fi", "fr", "ga", "gl", "it", "lt",
                   "nds", "nl", "nn", "pt", "ro", "ru", "sl", "sr", "sv", "uk", "wa"),
    "klettres": ("ar", "cs", "da", "de", "en", "en_GB", "es", "fr", "he", "hu", "id", "it",
                 "lt", "ml", "nb", "nds", "nl", "nn", "pt_BR", "ru", "tn", "uk"),
}
REAL_VOICES = [
    Voice("asterisk", "en_US_f_Allison", "asterisk-allison", "train"),
    Voice("asterisk", "es_MX_f_Allison", "asterisk-allison", "train"),
    Voice("asterisk", "ru_RU_f_IvrvoiceRU", "asterisk-ru", "train"),
    Voice("asterisk", "fr_CA_f_June", "asterisk-june", "valid"),
    Voice("asterisk", "it_IT_m_Carlo", "asterisk-carlo", "test"),
    Voice("festvox-ru", "msu_ru_nsh", "festvox-ru-nsh", "train"),
    Voice("qabcs", "en", "qabcs-en", "train"),  # the English word recordings (real voice)
    *[Voice(engine, lang, f"{engine}-{lang}", WORD_SPLITS.get(lang, "train"))
      for engine, langs in WORD_LANGUAGES.items() for lang in langs],
]
VOICES += REAL_VOICES
RECORDED_ENGINES = ("czech", "asterisk", "festvox-ru", "ktuberling", "klettres", "qabcs")
WORD_ENGINES = ("ktuberling", "klettres", "qabcs")  # isolated words: several per item
QABCS_WORDS = "/usr/share/qabcs/abcs"  # LANG/sounds/words/*.ogg

ENGINE_PACKAGES = {
    "flite": ("flite",),
    "festival": ("festival", "festvox-us-slt-hts", "festvox-kallpc16k", "festvox-kdlpc16k"),
    "espeak": ("espeak-ng",),
    "czech": ("fillets-ng-data-cs",),
    "asterisk": tuple(f"asterisk-core-sounds-{lang}-g722"
                      for lang in ("en", "es", "fr", "it", "ru")),
    "festvox-ru": ("festival", "festvox-ru"),
    "ktuberling": ("ktuberling-data",),
    "klettres": ("klettres-data",),
    "qabcs": ("qabcs-data",),
}
CZECH_ROOT = "/usr/share/games/fillets-ng/sound"  # */cs/*.ogg: fillets-ng-data-cs
NOISE_SOURCES = {  # package -> (folder, extensions)
    "qabcs-data": ("/usr/share/qabcs/abcs/all/noises", (".ogg",)),
    "bucklespring-data": ("/usr/share/buckle/wav", (".wav",)),
    "sonic-pi-samples": ("/usr/share/sonic-pi/samples", (".flac",)),
    "wesnoth-1.16-data": ("/usr/share/games/wesnoth/1.16/data/core/sounds/ambient", (".ogg",)),
    # real ambience: wind, water, fire, crickets, distant cars, machines (the 'real' size)
    "redeclipse-data": ("/usr/share/games/redeclipse/data/sounds/ambience", (".ogg",)),
}
GENERATED_NOISES = ("white", "pink", "brown", "hum", "babble")


@dataclass(frozen=True)
class SizeSpec:
    engines: tuple[str, ...]
    noise_packages: tuple[str, ...]
    items: dict[str, int]  # split -> number of noisy items; "train_noise" -> noise-only clips
    max_sentences: int = 3
    noise_files_per_package: int | None = None  # cap, for a fast tiny build
    real_eval: bool = False  # valid and test hold recorded real voices only
    room_fraction: float = 0.0  # share of noisy items whose speech is in a simulated room


SIZES = {
    "tiny": SizeSpec(("flite",), ("qabcs-data",),
                     {"train": 24, "train_noise": 12, "valid": 6, "test": 6},
                     max_sentences=2, noise_files_per_package=40),
    "small": SizeSpec(("flite", "festival", "czech"),
                      ("qabcs-data", "bucklespring-data", "sonic-pi-samples"),
                      {"train": 300, "train_noise": 100, "valid": 40, "test": 60}),
    "large": SizeSpec(("flite", "festival", "czech", "espeak"),
                      ("qabcs-data", "bucklespring-data", "sonic-pi-samples",
                       "wesnoth-1.16-data"),
                      {"train": 3600, "train_noise": 800, "valid": 120, "test": 200}),
    # voices and recorded noises that 'small' does not have (espeak in five languages, game
    # ambience): the source domain of domain-shift experiments evaluated on 'small'
    "shift": SizeSpec(("espeak",), ("wesnoth-1.16-data",),
                      {"train": 400, "train_noise": 100, "valid": 40, "test": 40}),
    # real human voices in ~30 languages beside the TTS voices, all recorded noise (with Red
    # Eclipse's real ambience), a third of the speech in simulated rooms; valid and test:
    # real voices that never train
    "real": SizeSpec(("flite", "festival", "espeak") + RECORDED_ENGINES, tuple(NOISE_SOURCES),
                     {"train": 4000, "train_noise": 800, "valid": 160, "test": 240},
                     max_sentences=2, real_eval=True, room_fraction=0.33),
    # for --kind sounds (universal sound separation): every recorded noise package, and
    # recorded real voices only (no speech synthesis), speakers and noise files disjoint
    # across splits
    "sounds": SizeSpec(RECORDED_ENGINES, tuple(NOISE_SOURCES),
                       {"train": 2000, "valid": 100, "test": 200}, real_eval=True),
}
