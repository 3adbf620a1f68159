"""Build the small font subsets shipped in ``src/lprnet/data/fonts/`` for the plate synthesizer.

Sources (Debian bookworm packages, both SIL Open Font License 1.1, which permits subsetting
and redistribution of modified versions together with the licence; neither declares a Reserved
Font Name that our subset names would use):

* ``fonts-noto-cjk`` -- ``/usr/share/fonts/opentype/noto/NotoSansCJK-{Regular,Bold}.ttc``,
  face index 2 = Noto Sans CJK SC (Simplified Chinese).  Copyright 2014-2021 Adobe.
  Used for the province characters and the special characters 警学使领港澳挂临.
  Licence: ``/usr/share/doc/fonts-noto-cjk/copyright`` (``License: SIL-1.1``).
* ``fonts-noto-cjk-extra`` -- the Medium and Black weights of Noto Sans CJK SC and Noto Serif CJK SC
  Bold (same licence and copyright), so the synthesizer can vary the province glyph style.
* ``fonts-dejavu-core`` -- ``DejaVuSansCondensed-Bold.ttf`` (Bitstream Vera licence + public
  domain DejaVu changes: redistribution and modification allowed if the name contains neither
  "Bitstream" nor "Vera"), a second Latin face for glyph variety.
* ``fonts-roboto-unhinted`` -- ``RobotoCondensed-Bold.ttf`` (Apache License 2.0, Copyright 2011
  Google Inc.), a narrow grotesque with a different M, W, Q and digits from DIN.
* ``fonts-wqy-microhei`` -- ``/usr/share/fonts/truetype/wqy/wqy-microhei.ttc``, face 0 = WenQuanYi
  Micro Hei (Apache License 2.0, or GPL-3+ with font exception; we take it under Apache-2.0),
  Copyright 2008-2009 The WenQuanYi Project Board of Trustees, based on Droid Sans Fallback
  (Copyright 2006-2008 Google).  A Hei design of its own, so the province glyphs are not all Noto.
* ``fonts-smiley-sans`` -- ``/usr/share/fonts/truetype/smiley-sans/SmileySans-Oblique.ttf``, Smiley Sans
  (SIL OFL 1.1, Copyright 2022 atelierAnchor), an oblique condensed Hei; the synthesizer shears it upright.
* npm ``@fontsource/zcool-qingke-huangyou`` 5.3.0 -- ``files/zcool-qingke-huangyou-chinese-simplified-400-normal.woff``,
  ZCOOL QingKe HuangYou (SIL OFL 1.1, Copyright 2018 The ZCOOL QingKe HuangYou Project Authors), a geometric
  condensed Hei.  Fetched with ``npm pack`` into ``build/fonts`` when ``--zcool`` is not given.
  Both condensed faces are drawn narrow like a plate face, unlike the square CJK faces above.
* ``fonts-opendin`` -- ``/usr/share/fonts/truetype/opendin/OSP-DIN.ttf``, a condensed DIN 1451
  style face (narrow, tall, like the GA 36 plate alphanumerics).  Copyright 2011 OSP.
  Licence: ``/usr/share/doc/fonts-opendin/OFL-1.1.txt.gz`` and ``copyright``.

Usage::

    apt-get install -y fonts-noto-cjk fonts-noto-cjk-extra fonts-opendin fonts-dejavu-core \
        fonts-roboto-unhinted fonts-wqy-microhei fonts-smiley-sans
    pip install fonttools           # and npm, for the ZCOOL face
    python scripts/make_fonts.py            # writes src/lprnet/data/fonts/

The outputs are tiny (tens of kB): only the glyphs plates need are kept (31 provinces + the
special characters, digits 0-9 and A-Z, a few punctuation marks), hinting and layout tables are dropped.
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lprnet.charset import DIGITS, PROVINCES  # noqa: E402

OUT_DIR = ROOT / "src" / "lprnet" / "data" / "fonts"
SPECIAL_CJK = "警学使领港澳挂临"
LATIN = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LABEL_EXTRA = " -_.·"  # the CJK subsets also carry Latin so preview labels render with one font

NOTO_DIR = Path("/usr/share/fonts/opentype/noto")
NOTO_FACE_SC = 2  # index of Noto Sans CJK SC inside the .ttc collection
OPENDIN = Path("/usr/share/fonts/truetype/opendin/OSP-DIN.ttf")
NOTO_COPYRIGHT = Path("/usr/share/doc/fonts-noto-cjk/copyright")
OPENDIN_OFL = Path("/usr/share/doc/fonts-opendin/OFL-1.1.txt.gz")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf")
DEJAVU_COPYRIGHT = Path("/usr/share/doc/fonts-dejavu-core/copyright")
ROBOTO = Path("/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf")
ROBOTO_COPYRIGHT = Path("/usr/share/doc/fonts-roboto-unhinted/copyright")
APACHE = Path("/usr/share/common-licenses/Apache-2.0")
WQY = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
WQY_COPYRIGHT = Path("/usr/share/doc/fonts-wqy-microhei/copyright")
SMILEY = Path("/usr/share/fonts/truetype/smiley-sans/SmileySans-Oblique.ttf")
SMILEY_COPYRIGHT = Path("/usr/share/doc/fonts-smiley-sans/copyright")
ZCOOL_NPM = "@fontsource/zcool-qingke-huangyou@5.3.0"
ZCOOL_WOFF = "package/files/zcool-qingke-huangyou-chinese-simplified-400-normal.woff"
#: the Debian packages the source fonts and licence texts come from
DEBIAN_PACKAGES = ("fonts-noto-cjk", "fonts-noto-cjk-extra", "fonts-opendin", "fonts-dejavu-core",
                   "fonts-roboto-unhinted", "fonts-wqy-microhei", "fonts-smiley-sans")
#: (source .ttc, output name) of the CJK faces; face index NOTO_FACE_SC (Simplified Chinese) in each.
CJK_FACES = (
    ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular-plates.otf"),
    ("NotoSansCJK-Medium.ttc", "NotoSansCJKsc-Medium-plates.otf"),
    ("NotoSansCJK-Bold.ttc", "NotoSansCJKsc-Bold-plates.otf"),
    ("NotoSansCJK-Black.ttc", "NotoSansCJKsc-Black-plates.otf"),
    ("NotoSerifCJK-Bold.ttc", "NotoSerifCJKsc-Bold-plates.otf"),
)

README = """\
# Plate fonts (generated, do not edit)

Subsets used by `lprnet.data.synth` to render synthetic licence plates.  Produced by
`python scripts/make_fonts.py` (needs the Debian packages {packages} and the Python package
`fonttools`); rerun it to rebuild these files.

- `NotoSansCJKsc-{{Regular,Medium,Bold,Black}}-plates.otf`, `NotoSerifCJKsc-Bold-plates.otf`: Noto Sans
  CJK SC in four weights and Noto Serif CJK SC Bold (Debian `fonts-noto-cjk` / `fonts-noto-cjk-extra`,
  face 2 of each `.ttc`), (c) 2014-2021 Adobe.
  Glyphs: {cjk}, plus `{latin}` and ` -_.·` (for preview labels).
  Licence: SIL OFL 1.1, see `OFL-NotoSansCJK.txt`.
- `WenQuanYiMicroHei-plates.ttf`: WenQuanYi Micro Hei (Debian `fonts-wqy-microhei`, face 0 of the `.ttc`),
  Copyright 2008-2009 The WenQuanYi Project Board of Trustees, based on Droid Sans Fallback (Copyright
  2006-2008 Google).  Glyphs: as the Noto CJK subsets.  Licence: Apache License 2.0 (the font is dual
  licensed Apache-2.0 / GPL-3+ with font exception; used here under Apache-2.0), see `LICENSE-WenQuanYi.txt`
  (modified: subset).
- `SmileySans-plates.ttf`: Smiley Sans (Debian `fonts-smiley-sans`), Copyright 2022 atelierAnchor.
  Glyphs: {cjk}.  Licence: SIL OFL 1.1, see `OFL-SmileySans.txt`.  An oblique face: the synthesizer shears its
  glyphs upright.
- `ZCOOLQingKeHuangYou-plates.ttf`: ZCOOL QingKe HuangYou (npm `{zcool_npm}`, the simplified-Chinese WOFF),
  Copyright 2018 The ZCOOL QingKe HuangYou Project Authors.  Glyphs: {cjk}.  Licence: SIL OFL 1.1, see
  `OFL-ZCOOLQingKeHuangYou.txt`.
- `OSP-DIN-plates.ttf`: OSP-DIN (Debian `fonts-opendin`), (c) 2011 OSP.  Glyphs: `{latin}`.
  Licence: SIL OFL 1.1, see `OFL-OSP-DIN.txt`.
- `DejaVuSansCondensed-Bold-plates.ttf`: DejaVu Sans Condensed Bold (Debian `fonts-dejavu-core`),
  Copyright (c) 2003 Bitstream, Inc.; DejaVu changes are in the public domain.  Glyphs: `{latin}`.
  Licence: Bitstream Vera licence, see `LICENSE-DejaVu.txt` (a modified version, not named
  "Bitstream" or "Vera").
- `RobotoCondensed-Bold-plates.ttf`: Roboto Condensed Bold (Debian `fonts-roboto-unhinted`),
  Copyright 2011 Google Inc.  Glyphs: `{latin}`.  Licence: Apache License 2.0, see
  `LICENSE-Roboto.txt` (modified: subset).

The Noto, Smiley Sans, ZCOOL and OSP-DIN files are Modified Versions under the OFL (subsets: unneeded glyphs,
hinting and layout tables removed).  They are distributed under the SIL Open Font License 1.1 only, together with the
licence files in this folder.
"""


def _subset(src: Path, dst: Path, text: str, font_number: int = 0) -> None:
    opts = subset.Options()
    opts.font_number = font_number
    opts.layout_features = []
    opts.hinting = False
    opts.desubroutinize = True
    opts.name_IDs = ["*"]
    opts.name_languages = ["*"]
    opts.notdef_outline = True
    opts.glyph_names = False
    opts.drop_tables += ["FFTM"]
    font = subset.load_font(str(src), opts)
    sub = subset.Subsetter(opts)
    sub.populate(text=text)
    sub.subset(font)
    for tag in ("VORG", "vhea", "vmtx", "BASE", "GDEF", "GPOS", "GSUB"):
        if tag in font:
            del font[tag]
    dst.parent.mkdir(parents=True, exist_ok=True)
    subset.save_font(font, str(dst), opts)
    check = TTFont(str(dst))
    cmap = check.getBestCmap()
    missing = [c for c in text if ord(c) not in cmap]
    if missing:
        raise SystemExit(f"{dst.name}: glyphs missing after subsetting: {''.join(missing)}")


def _debian_licence(copyright_file: Path, licence: str, header: str) -> str:
    """``header`` + the ``License: <licence>`` paragraph of a Debian ``copyright`` file."""
    text = copyright_file.read_text(encoding="utf-8")
    m = re.search(rf"^License: {re.escape(licence)}\n((?: .*\n?)+)", text, flags=re.M)
    if not m:
        raise SystemExit(f"could not find the {licence} licence text in {copyright_file}")
    body = "\n".join("" if ln.strip() == "." else ln[1:] for ln in m.group(1).splitlines())
    return header + body.strip() + "\n"


def _noto_licence() -> str:
    return _debian_licence(NOTO_COPYRIGHT, "SIL-1.1", (
        "Noto Sans CJK SC and Noto Serif CJK SC (subsets), from the Debian packages fonts-noto-cjk\n"
        "and fonts-noto-cjk-extra.\n"
        "Copyright 2014-2021 Adobe (http://www.adobe.com/).\n"
        "Copyright 2010-2012 Google Corporation.\n\n"
        "This Font Software is licensed under the SIL Open Font License, Version 1.1.\n\n"
    ))


def _opendin_licence() -> str:
    with gzip.open(OPENDIN_OFL, "rt", encoding="utf-8") as fh:
        body = fh.read()
    if "Copyright" not in body:
        body = "Copyright (C) 2011 OSP (http://ospublish.constantvzw.org).\n\n" + body
    return "OSP-DIN (subset), from the Debian package fonts-opendin.\n\n" + body.strip() + "\n"


def _dejavu_licence() -> str:
    return _debian_licence(DEJAVU_COPYRIGHT, "bitstream-vera", (
        "DejaVu Sans Condensed Bold (subset), from the Debian package fonts-dejavu-core.\n"
        "Copyright (c) 2003 by Bitstream, Inc. All Rights Reserved. Bitstream Vera is a trademark of\n"
        "Bitstream, Inc.  DejaVu changes are in the public domain.\n\n"
    ))


def _apache_licence(header: str) -> str:
    """``header`` + the full Apache License 2.0 text (Debian's common-licenses copy)."""
    return header + APACHE.read_text(encoding="utf-8").strip() + "\n"


def _roboto_licence() -> str:
    return _apache_licence("Roboto Condensed Bold (subset), from the Debian package fonts-roboto-unhinted.\n"
                           "Copyright 2011 Google Inc. All Rights Reserved.\n"
                           "Modified: subset to the plate characters, hinting and layout tables removed.\n\n")


def _wqy_licence() -> str:
    text = WQY_COPYRIGHT.read_text(encoding="utf-8")
    if "Apache-2.0" not in text:
        raise SystemExit(f"{WQY_COPYRIGHT} no longer offers Apache-2.0; check the WenQuanYi licence")
    return _apache_licence(
        "WenQuanYi Micro Hei (subset), from the Debian package fonts-wqy-microhei.\n"
        "Copyright 2008-2009 The WenQuanYi Project Board of Trustees; Qianqian Fang; mozbug.\n"
        "Based on the Google Droid font family: Copyright 2006-2008 Google Corporation, Steve Matteson,\n"
        "Ascender Corp.  Dual licensed Apache-2.0 or GPL-3+ with font exception; distributed here under\n"
        "the Apache License 2.0.  Modified: subset to the plate characters, hinting and layout tables removed.\n\n")


def _smiley_licence() -> str:
    return _debian_licence(SMILEY_COPYRIGHT, "OFL-1.1", (
        "Smiley Sans (subset), from the Debian package fonts-smiley-sans.\n"
        "Copyright 2022 atelierAnchor (https://atelier-anchor.com).\n\n"
    ))


def _fetch_zcool(build: Path) -> Path:
    """Unpack the fontsource npm package of ZCOOL QingKe HuangYou into ``build`` (npm pack) and return its WOFF."""
    woff = build / ZCOOL_WOFF
    if not woff.exists():
        build.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", ZCOOL_NPM, "--pack-destination", str(build)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(build / out) as tf:
            tf.extractall(build, filter="data")
    return woff


def _zcool_licence(woff: Path, licence: Path | None) -> str:
    """The OFL text of the ZCOOL WOFF: ``licence`` when given, else the npm package's ``LICENSE`` (beside the
    WOFF or one folder up, as ``npm pack`` unpacks it); a clear error naming the places looked in otherwise."""
    places = [licence] if licence is not None else [woff.parent / "LICENSE", woff.parents[1] / "LICENSE"]
    for p in places:
        if p.is_file():
            return p.read_text(encoding="utf-8").strip()
    raise SystemExit(f"no licence for {woff}: looked for {', '.join(map(str, places))}; "
                     f"pass --zcool-licence FILE (the LICENSE of npm {ZCOOL_NPM})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--zcool", type=Path, default=None,
                    help=f"the ZCOOL QingKe HuangYou WOFF ({ZCOOL_WOFF} of npm {ZCOOL_NPM}); fetched when omitted")
    ap.add_argument("--zcool-licence", type=Path, default=None,
                    help="the OFL text for --zcool (default: the npm package's LICENSE beside it or one folder up)")
    args = ap.parse_args(argv)
    out: Path = args.out

    needed = [NOTO_DIR / src for src, _ in CJK_FACES] + [OPENDIN, NOTO_COPYRIGHT, OPENDIN_OFL, DEJAVU, DEJAVU_COPYRIGHT,
                                                      ROBOTO, ROBOTO_COPYRIGHT, APACHE, WQY, WQY_COPYRIGHT,
                                                      SMILEY, SMILEY_COPYRIGHT]
    for p in needed:
        if not p.exists():
            raise SystemExit(f"missing {p}: apt-get install -y {' '.join(DEBIAN_PACKAGES)}")

    zcool = args.zcool or _fetch_zcool(ROOT / "build" / "fonts")
    zcool_licence = _zcool_licence(zcool, args.zcool_licence)  # before anything is written

    cjk = PROVINCES + SPECIAL_CJK
    for src, dst in CJK_FACES:
        _subset(NOTO_DIR / src, out / dst, cjk + LATIN + LABEL_EXTRA, font_number=NOTO_FACE_SC)
    _subset(WQY, out / "WenQuanYiMicroHei-plates.ttf", cjk + LATIN + LABEL_EXTRA, font_number=0)
    _subset(SMILEY, out / "SmileySans-plates.ttf", cjk)
    _subset(zcool, out / "ZCOOLQingKeHuangYou-plates.ttf", cjk)
    _subset(OPENDIN, out / "OSP-DIN-plates.ttf", LATIN)
    _subset(DEJAVU, out / "DejaVuSansCondensed-Bold-plates.ttf", LATIN)
    _subset(ROBOTO, out / "RobotoCondensed-Bold-plates.ttf", LATIN)

    (out / "OFL-NotoSansCJK.txt").write_text(_noto_licence(), encoding="utf-8")
    (out / "OFL-OSP-DIN.txt").write_text(_opendin_licence(), encoding="utf-8")
    (out / "LICENSE-DejaVu.txt").write_text(_dejavu_licence(), encoding="utf-8")
    (out / "LICENSE-Roboto.txt").write_text(_roboto_licence(), encoding="utf-8")
    (out / "LICENSE-WenQuanYi.txt").write_text(_wqy_licence(), encoding="utf-8")
    (out / "OFL-SmileySans.txt").write_text(_smiley_licence(), encoding="utf-8")
    (out / "OFL-ZCOOLQingKeHuangYou.txt").write_text(
        "ZCOOL QingKe HuangYou (subset), from the npm package " + ZCOOL_NPM + ".\n\n"
        + zcool_licence + "\n", encoding="utf-8")
    packages = ", ".join(f"`{p}`" for p in DEBIAN_PACKAGES)
    readme = README.format(cjk=cjk, latin=LATIN, packages=packages, zcool_npm=ZCOOL_NPM)
    (out / "README.md").write_text(readme, encoding="utf-8")

    total = 0
    for p in sorted(out.iterdir()):
        total += p.stat().st_size
        print(f"{p.stat().st_size:>9,d}  {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
    print(f"{total:>9,d}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
