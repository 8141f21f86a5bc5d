"""Player names: which ones the server accepts, how they are compared, how lookalikes are caught.

Written to be pasted into server.py's "validation of names" section (drop the
imports and MAX_NAME_CHARS, which server.py already has).  A name is refused,
with a sentence a child can act on, when it is empty, too long, only dots,
holds a character nobody can see, or mixes alphabets no language writes
together (Unicode TS #39, "highly restrictive").  An accepted name gives three
strings: the spelling to show, the key names are compared by, and the skeleton
that tells the board a new name looks like an old one (Ruтu like Rutu).
"""

import re
import unicodedata

# ---------------------------------------------------------------------------
# Validation of names
# ---------------------------------------------------------------------------

MAX_NAME_CHARS = 32  # a name fits one leaderboard row on a phone

# Emoji, as whole blocks of symbols, since unicodedata has no emoji property.
# The blocks hold more than the emoji, but every one of them is visible, so an
# emoji selector or joiner after one of them still follows something you see.
EMOJI = ("\u00A9\u00AE\u203C\u2049\u2122\u2139\u2190-\u21FF\u2300-\u23FF\u24C2"
         "\u25A0-\u27BF\u2900-\u297F\u2B00-\u2BFF\u3030\u303D\u3297\u3299\U0001F000-\U0001FAFF")

# Characters of the scripts whose words need a joiner or non-joiner between
# two letters: Arabic (Persian علی‌رضا), Syriac, N'Ko, Mandaic, the Indic scripts
# from Devanagari to Sinhala, Mongolian.
JOINING_LETTERS = "\u0600-\u08FF\u0900-\u0DFF\u1800-\u18AF\uFB50-\uFDFF\uFE70-\uFEFC"

# The invisible characters a name may hold, each only where it does its job.
# check_name takes these out before it looks for invisible characters.  Each
# branch starts with the invisible character and looks behind it afterwards,
# so the search skips ordinary text at the speed of a character-set scan.
PLACED_INVISIBLES = re.compile(
    f"[\uFE0E\uFE0F](?<=[{EMOJI}].)"                          # text or emoji style of the emoji before: ❤️
    "|\uFE0F(?<=[0-9#*].)(?=\u20E3)"                          # a keycap: 1️⃣
    f"|\u200D(?<=[{EMOJI}\uFE0F].)(?=[{EMOJI}])"              # emoji joined into one: 👩‍🚀 🏳️‍🌈
    f"|[\u200C\u200D](?<=[{JOINING_LETTERS}].)(?=[{JOINING_LETTERS}])"  # inside an Arabic or Indic word
    # 🏴 and tags up to a cancel tag: Scotland's flag
    "|[\U000E0020-\U000E007E](?<=\U0001F3F4.)[\U000E0020-\U000E007E]*\U000E007F"
)

# Why a character is refused wherever it still stands, for the characters
# whose general category does not say it: letters and symbols that draw
# nothing, and the invisible characters that have a job somewhere else.
RETYPE = "type the name again by hand"
INVISIBLE_REASONS = {
    **dict.fromkeys("\u034F\u17B4\u17B5\u180B\u180C\u180D\u180F", f"an invisible character: {RETYPE}"),
    **dict.fromkeys(map(chr, range(0xFE00, 0xFE0E)), f"an invisible character: {RETYPE}"),
    **dict.fromkeys(map(chr, range(0xE0100, 0xE01F0)), f"an invisible character: {RETYPE}"),
    **dict.fromkeys("\u115F\u1160\u2800\u3164\uFFA0",
                    "a blank character that looks like a space: use letters or digits"),
    **dict.fromkeys("\u061C\u200E\u200F\u202A\u202B\u202C\u202D\u202E\u2066\u2067\u2068\u2069",
                    f"an invisible character that turns text around: {RETYPE}"),
    **dict.fromkeys("\u200C\u200D", "an invisible joiner, which may only stand between two emoji "
                                    f"or two letters that join: {RETYPE}"),
    **dict.fromkeys("\uFE0E\uFE0F", f"an invisible emoji selector, which may only follow an emoji: {RETYPE}"),
    **dict.fromkeys(map(chr, range(0xE0000, 0xE0080)),
                    f"an invisible tag character, which may only follow 🏴 to make a flag: {RETYPE}"),
}

# Why the other refused characters are refused, by general category: format
# (invisible), control, line breaks, surrogate, private use, unassigned.
CATEGORY_REASONS = {
    "Cf": f"an invisible formatting character: {RETYPE}",
    "Cc": f"an invisible control character: {RETYPE}",
    "Zl": "a line break: keep the name on one line",
    "Zp": "a paragraph break: keep the name on one line",
    "Cs": f"half of a character that was cut in two: {RETYPE}",
    "Co": "a private-use character that looks different on every device: "
          "use letters, digits, spaces and punctuation",
    "Cn": "a character this server does not know yet: use letters, digits, spaces and punctuation",
}

# First words of Unicode character names that are not the name of a script:
# the script they stand for, or None for characters every script shares.
SCRIPT_WORDS = {
    "CJK": "Han", "IDEOGRAPHIC": "Han", "VIETNAMESE": "Han",  # 々, as in 佐々木
    "HENTAIGANA": "Hiragana",
    "": "Tangut",  # the only letters this Python has no name for
    "TURNED": "Latin", "ROMAN": "Latin",  # Ⅎ ↄ
    "COMBINING": None, "VARIATION": None, "MUSICAL": None, "VEDIC": None,  # marks on any letter
    "MODIFIER": None, "CARON": None, "VERTICAL": None, "MASU": None,  # ʼ ˇ ⸯ 〼
    "SPACE": None,  # Arabic vowel signs standing alone, whose NFKC starts with a space
    "KATAKANA-HIRAGANA": None,  # ー, written in both
}

# The scripts one name may mix (TS #39 "highly restrictive"): Japanese,
# Chinese with Bopomofo, Korean, each also with Latin.  Any one script alone
# is fine too.
SCRIPT_MIXES = (
    frozenset({"Latin", "Han", "Hiragana", "Katakana"}),
    frozenset({"Latin", "Han", "Bopomofo"}),
    frozenset({"Latin", "Han", "Hangul"}),
)

# Invisible characters that change how a name is drawn, not which name it is;
# NFKC_Casefold drops them too, so ❤️ and ❤ are one player.  The tags of a flag
# stay in the key: they are all that tells Scotland's flag from Wales's.
KEY_IGNORES = dict.fromkeys(map(ord, "\u200C\u200D\uFE0E\uFE0F"))

# Accents in the skeleton: the general combining marks (not the vowel signs of
# Indic or Thai, which spell other words), small on a projector, and most often
# the same child on two keyboards: Zoë and Zoe, José and Jose.
ACCENTS = re.compile("[\u0300-\u036F\u1AB0-\u1AFF\u1DC0-\u1DFF\uFE20-\uFE2F]")

# Greek capitals that look like a Latin capital while their small letter looks
# like another Latin letter (Ν is N, ν is v): mapped before case is folded.
LOOKALIKE_CAPITALS = str.maketrans("ΗΜΝΥ", "HMNY")

# Letters of other scripts, after case folding, that look like a Latin letter;
# and the apostrophes and dashes a phone puts in O'Brien and Anne-Marie.
# Digits are not letters here: a 0 or a 1 in a name is most often a child
# telling themselves apart (Mia 2), and the key keeps I and l apart anyway.
LOOKALIKES = str.maketrans(
    "авекмнорстухіјѕԁԛԝүһӏ"          # Cyrillic
    "αβεζηικνορτυχ"                  # Greek
    "սօցոհ"                          # Armenian
    "ᎠᎡᎢᎥᎩᎪᎫᎬᎳᎷᎻᎽᏀᏂᏃᏏᏒᏔᏕᏙᏚᏞᏟᏢᏦᏧᏳᏴ"  # Cherokee, whose case folds to capitals
    "øłđħı"                          # Latin letters with a stroke or no dot
    "’‘ʼʻ`′‐‒–—―−",
    "abekmhopctyxijsdqwyhl"
    "abeznikvoptux"
    "uognh"
    "drtiyajewmhyghzbrwsvslcpkdgb"
    "oldhi"
    "''''''------",
)


class NameRefused(ValueError):
    """A name the server refuses; the message tells a child how to fix it."""


def check_name(raw, what="name"):
    """The name to show, its key and its skeleton, or NameRefused saying why it cannot be used."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise NameRefused(f"the {what} is empty: use 1 to {MAX_NAME_CHARS} characters")
    if len(name) > MAX_NAME_CHARS:
        raise NameRefused(f"the {what} is {len(name)} characters long: use at most {MAX_NAME_CHARS}")
    if not name.strip("."):
        # A browser turns /score/. and /score/.. into other paths, so such a
        # name could never be looked up again.
        raise NameRefused(f"the {what} is only dots: use letters or digits too")
    refuse_invisible(name, what)
    refuse_mixed_scripts(name, what)
    return name, name_key(name), skeleton(name)


def refuse_invisible(name, what):
    """Refuse a character nobody can see, outside the places it has a job, and a name with nothing to read."""
    for char in PLACED_INVISIBLES.sub("", name):
        reason = INVISIBLE_REASONS.get(char) or CATEGORY_REASONS.get(unicodedata.category(char))
        if reason:
            raise NameRefused(f"the {what} contains U+{ord(char):04X}, {reason}")
    if not any(unicodedata.category(char)[0] in "LNPS" for char in name):
        raise NameRefused(f"the {what} is blank: accents and marks alone show nothing; use letters or digits")


def refuse_mixed_scripts(name, what):
    """Refuse letters of two scripts that no language writes together, naming both."""
    # NFKC first, so Ｒ counts as LATIN and ｱ as KATAKANA, not FULLWIDTH and HALFWIDTH.
    seen, last = set(), None
    for char in unicodedata.normalize("NFKC", name):
        script = script_of(char)
        if script is None or script == last:
            continue
        seen.add(script)
        if len(seen) > 1 and not any(seen <= mix for mix in SCRIPT_MIXES):
            raise NameRefused(f"the {what} mixes {last} and {script} letters ({char} is {script}): "
                              "use letters of one alphabet")
        last = script


def script_of(char):
    """The script of a letter or mark in NFKC form; None for digits, punctuation, emoji and shared marks."""
    if char.isascii():
        return "Latin" if char.isalpha() else None
    if unicodedata.category(char)[0] not in "LM":
        return None
    word = unicodedata.name(char, "").split(" ", 1)[0]
    return SCRIPT_WORDS.get(word, word.capitalize())


def name_key(name):
    """The key names are compared by: NFKC_Casefold, as near as the standard library comes."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(KEY_IGNORES)
    return unicodedata.normalize("NFKC", folded)


def skeleton(name):
    """The key without accents, lookalike letters spelled in Latin: equal skeletons look alike."""
    key = name_key(unicodedata.normalize("NFKC", name).translate(LOOKALIKE_CAPITALS))
    bare = ACCENTS.sub("", unicodedata.normalize("NFD", key)).translate(LOOKALIKES)
    return unicodedata.normalize("NFC", " ".join(bare.split()))
