#!/usr/bin/env python3
"""Write tests/data/real_names.txt: first names and surnames of many cultures, to test the name filter on.

Source: the person providers of the PyPI package ``Faker`` (tested with
40.63.0; MIT licence, (c) Daniele Faraglia and contributors), whose lists
come from public name statistics.  Only the data is used, and only by this
script: install Faker in a throwaway venv, not in the project.

    python3 -m venv /tmp/fv && /tmp/fv/bin/pip install faker==40.63.0
    /tmp/fv/bin/python tools/make_real_names.py

The file holds one name a line, each as a child would type it (one word or a
few), sorted, after a header of # lines saying where it came from.  Names
that the server would refuse for other reasons (mixed alphabets, over 32
characters) are left out: the file is about the rude-word filter.
"""

import importlib
import pathlib
import pkgutil
import sys

import faker
import faker.providers.person

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import server  # noqa: E402  (for clean_name: keep only names the server takes)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "real_names.txt"
FIELDS = ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary",
          "last_names", "last_names_male", "last_names_female")


def names_of(locale_module):
    """Every first name and surname a Faker person provider lists."""
    provider = getattr(locale_module, "Provider", None)
    for field in FIELDS:
        value = getattr(provider, field, ())
        if isinstance(value, dict):
            value = value.keys()
        if isinstance(value, (list, tuple, set, frozenset, type({}.keys()))):
            yield from value


def main():
    names, locales = set(), []
    for info in pkgutil.iter_modules(faker.providers.person.__path__):
        module = importlib.import_module(f"faker.providers.person.{info.name}")
        found = {name.strip() for name in names_of(module) if isinstance(name, str) and name.strip()}
        kept = set()
        for name in found:
            try:
                kept.add(server.clean_name(name))
            except server.HTTPError:
                continue
        if kept:
            locales.append(info.name)
            names |= kept
    header = [
        f"# {len(names)} first names and surnames from the person providers of Faker {faker.VERSION}",
        "# (PyPI, MIT licence), locales: " + " ".join(sorted(locales)),
        "# made by tools/make_real_names.py; one name a line",
    ]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(header + sorted(names)) + "\n", encoding="utf-8")
    print(f"{len(names)} names from {len(locales)} locales -> {OUT}")


if __name__ == "__main__":
    main()
