"""Which player names the server accepts, what a child reads when one is refused, and which names look alike.

Invisible characters are written as escapes (\\u200D) so a reader can see them.
"""

import pytest

from server import HTTPError as NameRefused
from server import clean_name, name_key, skeleton


def check_name(raw, what="name"):
    """What the server makes of a name: the spelling it shows, its key and its skeleton (or a 400)."""
    shown = clean_name(raw, what)
    return shown, name_key(shown), skeleton(shown)

ACCEPTED = [
    "👩\u200D🚀 Mia",                                   # emoji joined by ZWJ, then a name
    "🧑\u200D💻",
    "🏳\uFE0F\u200D🌈",                                 # selector, then joiner
    "🧑🏽\u200D💻",                                      # skin tone, then joiner
    "👍🏽 Ava",
    "❤\uFE0F Mia",
    "1\uFE0F\u20E3 Max",                                # keycap
    "علی\u200Cرضا",                                     # Persian, ZWNJ between letters
    "क्\u200Dष",                                        # Devanagari, ZWJ after a virama
    "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F Ewan",  # Scotland's flag
    "José", "Zoë", "Łukasz", "Nguyễn Văn An",
    "山田 Taro", "さくら Sakura", "민준 Kim", "佐々木", "ラーメン",
    "王ㄒㄧㄠ Ming",                                     # Han with Bopomofo
    "Ольга", "Αλέξης", "Անի",
    "O'Brien", "Anne-Marie", "Mia 2", "DJ_Mia", "Rutu",
    "Ｒｕｔｕ",
]

# The blanks of the issue: each must be refused, alone or inside a name.
BLANKS = ["\u3164", "\u2800", "\u034F", "\u115F", "\u1160", "\uFE0F", "\u200B", "\uFFA0"]

INVISIBLES = [
    "\u00AD",                     # soft hyphen
    "\u180E",                     # Mongolian vowel separator
    "\u2060", "\u2063", "\u206F",
    "\uFEFF",                     # byte order mark
    "\uFE00",                     # variation selector 1
    "\U000E0100",                 # variation selector 17
    "\u17B4",
    "\U000E0001",                 # language tag
    "\U0001D173",                 # musical symbol begin beam
]

BIDI_CONTROLS = ["\u061C", "\u200E", "\u200F", "\u202A", "\u202B", "\u202C", "\u202D", "\u202E",
                 "\u2066", "\u2067", "\u2068", "\u2069"]

MISPLACED_JOINERS = [
    "\u200DMia", "Mia\u200D", "Mi \u200D a", "M\u200Dia", "M\u200Cia",
    "👩\u200D Mia",               # joins an emoji to a space
    "\u200D",
]

MIXED_SCRIPTS = [
    # name, first script, second script, the letter named
    ("Ruтu", "Latin", "Cyrillic", "т"),
    ("Rutս", "Latin", "Armenian", "ս"),
    ("RUТU", "Latin", "Cyrillic", "Т"),
    ("Mαx", "Latin", "Greek", "α"),
    ("ᎡUTU", "Cherokee", "Latin", "U"),
    ("さくら민준", "Hiragana", "Hangul", "민"),
    ("Ｒｕтｕ", "Latin", "Cyrillic", "т"),
    ("Mia אנה", "Latin", "Hebrew", "א"),
]

LOOKALIKES = [
    ("Ruтu", "Rutu"),
    ("Rutս", "Rutu"),
    ("Ｒｕｔｕ", "Rutu"),
    ("ΜΙΑ", "Mia"),               # all Greek capitals
    ("Ανα", "Ava"),               # all Greek, small ν looks like v
    ("Тома", "Toma"),             # all Cyrillic
    ("ᎪᎷᎽ", "Amy"),               # all Cherokee
    ("Zoë", "Zoe"),
    ("Łukasz", "Lukasz"),
    ("O’Brien", "O'Brien"),       # a phone's apostrophe
    ("Anne–Marie", "Anne-Marie"),  # a phone's dash
    ("Mia  2", "Mia 2"),          # a web page shows two spaces as one
    ("❤\uFE0F Mia", "❤ Mia"),
]

DIFFERENT_NAMES = [
    ("Mia", "Max"), ("Ana", "Anna"), ("Leo", "Lea"), ("Sam", "Sami"), ("Noah", "Noa"),
    ("Mia 2", "Mia 3"), ("Ольга", "Olga"), ("Вера", "Vera"),
    ("Руту", "Rutu"),             # all Cyrillic, it reads Pyty
    ("👩\u200D🚀 Mia", "🧑\u200D💻 Mia"),
    ("山田", "田山"), ("민준", "민지"),
    ("🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F Ewan",
     "🏴\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F Ewan"),  # Scotland, Wales
]


def refusal(raw, what="name"):
    """The message a refused name gets."""
    with pytest.raises(NameRefused) as refused:
        check_name(raw, what)
    return str(refused.value)


def test_every_list_of_names_has_names():
    for names in (ACCEPTED, BLANKS, INVISIBLES, BIDI_CONTROLS, MISPLACED_JOINERS, MIXED_SCRIPTS,
                  LOOKALIKES, DIFFERENT_NAMES):
        assert names


# ---- accepted names

@pytest.mark.parametrize("raw", ACCEPTED)
def test_a_real_name_is_accepted_and_shown_as_typed(raw):
    display, key, shape = check_name(raw)
    assert display == raw
    assert key == name_key(raw)
    assert shape == skeleton(raw)


def test_spaces_around_a_name_are_trimmed():
    assert check_name("  Mia \u3000")[0] == "Mia"


def test_a_name_is_shown_in_composed_form():
    assert check_name("Zoe\u0308")[0] == "Zoë"


def test_thirty_two_characters_are_enough():
    assert check_name("M" * 32)[0] == "M" * 32


def test_length_counts_characters_after_composing_accents():
    assert check_name("e\u0301" * 32)[0] == "é" * 32


# ---- length, empty, dots

def test_an_empty_name_is_refused():
    assert refusal("") == "the name is empty: use 1 to 32 characters"


def test_a_name_of_spaces_is_empty():
    assert refusal(" \t\u3000 ") == "the name is empty: use 1 to 32 characters"


def test_a_long_name_says_how_long_it_is():
    assert refusal("M" * 33) == "the name is 33 characters long: use at most 32"


@pytest.mark.parametrize("raw", [".", "..", "..."])
def test_a_name_of_only_dots_is_refused(raw):
    assert refusal(raw) == "the name is only dots: use letters or digits too"


def test_the_message_names_the_field_it_is_about():
    assert refusal("", what="user name") == "the user name is empty: use 1 to 32 characters"


def test_a_refusal_is_a_400():
    with pytest.raises(NameRefused) as refused:
        check_name("")
    assert refused.value.status == 400


def test_a_64_kilobyte_name_is_refused_by_its_length_alone():
    with pytest.raises(NameRefused) as refused:
        check_name("e\u0301" * 21845)
    assert "over 256 bytes" in refused.value.message


# ---- blank and invisible characters

@pytest.mark.parametrize("char", BLANKS)
def test_a_blank_character_alone_is_refused_as_blank_or_invisible(char):
    message = refusal(char)
    assert f"U+{ord(char):04X}" in message
    assert "blank" in message or "invisible" in message


@pytest.mark.parametrize("char", BLANKS)
def test_a_blank_character_inside_a_name_is_refused(char):
    message = refusal(f"Mia{char}Max")
    assert f"U+{ord(char):04X}" in message
    assert "blank" in message or "invisible" in message


@pytest.mark.parametrize("char", ["\u3164", "\u2800", "\u115F", "\u1160", "\uFFA0"])
def test_fillers_that_look_like_spaces_are_called_blank(char):
    assert "a blank character that looks like a space" in refusal(f"Mia{char}")


@pytest.mark.parametrize("char", INVISIBLES)
def test_other_invisible_characters_are_refused(char):
    message = refusal(f"Mi{char}a")
    assert f"U+{ord(char):04X}, an invisible" in message


@pytest.mark.parametrize("char", BIDI_CONTROLS)
def test_a_character_that_turns_text_around_is_refused(char):
    assert "an invisible character that turns text around" in refusal(f"Mia{char}Max")


@pytest.mark.parametrize("raw", MISPLACED_JOINERS)
def test_a_joiner_between_things_it_cannot_join_is_refused(raw):
    assert "an invisible joiner" in refusal(raw)


@pytest.mark.parametrize("raw", ["\uFE0F", "Mia\uFE0F", "\uFE0FMia", "1\uFE0F", "❤\uFE0F\uFE0F"])
def test_an_emoji_selector_without_an_emoji_is_refused(raw):
    assert "an invisible emoji selector" in refusal(raw)


@pytest.mark.parametrize("raw", [
    "Mia\U000E0067\U000E007F",                       # tags with no flag
    "🏴\U000E0067\U000E0062",                        # a flag never finished
    "🏴\U000E007F",                                  # an end with nothing before it
    "🏴 \U000E0067\U000E007F",                       # a space between flag and tags
])
def test_a_tag_outside_a_finished_flag_is_refused(raw):
    assert "an invisible tag character" in refusal(raw)


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\n"])
def test_a_control_character_is_refused(char):
    assert "an invisible control character" in refusal(f"Mia{char}Max")


def test_a_line_break_is_refused():
    assert "a line break" in refusal("Mia\u2028Max")


def test_a_private_use_character_is_refused():
    assert "a private-use character" in refusal("Mia\uE000")


def test_an_unassigned_character_is_refused():
    assert "a character this server does not know" in refusal("Mia\u0378")


def test_a_broken_half_of_a_character_is_refused():
    assert "half of a character" in refusal("Mia\ud83d")


def test_accents_with_no_letter_are_blank():
    assert refusal("\u0301\u0308") == "the name is blank: accents and marks alone show nothing; use letters or digits"


# ---- scripts

@pytest.mark.parametrize("raw, first, second, letter", MIXED_SCRIPTS)
def test_a_name_that_mixes_alphabets_names_both_and_the_letter(raw, first, second, letter):
    assert refusal(raw) == (f"the name mixes {first} and {second} letters ({letter} is {second}): "
                            "use letters of one alphabet")


@pytest.mark.parametrize("raw", ["山田 Taro さくら カタカナ", "민준 金 Kim", "王ㄒㄧㄠ Ming", "Ольга 2", "Αλέξης!"])
def test_scripts_one_language_writes_together_are_accepted(raw):
    assert check_name(raw)[0] == raw


@pytest.mark.parametrize("raw", ["Mia 🦖", "Mia #1", "Ольга ❤\uFE0F", "José\u0301"])
def test_digits_punctuation_emoji_and_accents_go_with_any_alphabet(raw):
    check_name(raw)


# ---- keys

def test_full_width_letters_have_the_key_of_ordinary_ones():
    assert name_key("Ｒｕｔｕ") == name_key("Rutu") == "rutu"


def test_case_does_not_make_another_player():
    assert name_key("RUTU") == name_key("rutu")


def test_the_key_folds_sharp_s_and_ligatures():
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("ﬁona") == name_key("Fiona")


def test_an_emoji_with_or_without_its_selector_is_one_player():
    assert name_key("❤\uFE0F Mia") == name_key("❤ Mia")


def test_a_persian_name_with_or_without_its_non_joiner_is_one_player():
    assert name_key("علی\u200Cرضا") == name_key("علیرضا")


def test_two_flags_are_two_players():
    scotland = "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"
    wales = "🏴\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F"
    assert name_key(scotland) != name_key(wales)


# ---- lookalikes

@pytest.mark.parametrize("one, other", LOOKALIKES)
def test_a_lookalike_has_the_skeleton_of_the_name_it_copies(one, other):
    assert skeleton(one) == skeleton(other)


def test_ruthu_in_three_spellings_collides_with_rutu():
    assert skeleton("Ruтu") == skeleton("Rutս") == skeleton("Ｒｕｔｕ") == "rutu"


@pytest.mark.parametrize("one, other", DIFFERENT_NAMES)
def test_different_names_keep_different_skeletons(one, other):
    assert skeleton(one) != skeleton(other)


def test_full_width_rutu_is_the_same_player_not_a_lookalike():
    _, key, shape = check_name("Ｒｕｔｕ")
    assert (key, shape) == (name_key("Rutu"), skeleton("Rutu"))
