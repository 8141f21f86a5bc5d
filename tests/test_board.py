"""The projector page /board and our QR encoder /qr.js, checked in a real browser.

The board is read from the back of a classroom at 1920x1080, so these tests
measure what a child sees there: text sizes, the order of the rows, and a
QR code that a reader (zbarimg, as a phone camera would) turns back into
the join address.
"""

import json
import shutil
import struct
import subprocess
import urllib.parse
import zlib

import pytest

from conftest import HOSTILE_NAMES, LIVE_MS, eventually, expect, http, post_score, same_origin

PROJECTOR = {"viewport": {"width": 1920, "height": 1080}, "device_scale_factor": 1}
MIN_ROW_TEXT_PX = 54     # 5 % of 1080: readable from the back of the room
MIN_CONTRAST = 4.5       # WCAG AA for normal text
ZBARIMG = shutil.which("zbarimg")

# Longest byte-mode text of each version at level M and Q (the standard's capacity table).
CAPACITY = {"M": [14, 26, 42, 62, 84, 106, 122, 152, 180, 213],
            "Q": [11, 20, 32, 46, 60, 74, 86, 108, 130, 151]}
LAN_URL = "http://192.168.1.23:8080/"
pytestmark = pytest.mark.usefixtures("plain_posts_count")  # the board is seeded with plain posts


# ---------------------------------------------------------------- helpers


def decode_qr(png_path):
    """What a QR reader makes of the picture: zbarimg's text, or '' if it finds no code."""
    if ZBARIMG is None:
        pytest.fail("zbarimg is missing: `apt-get install zbar-tools`")
    result = subprocess.run([ZBARIMG, "--raw", "-q", str(png_path)], capture_output=True, timeout=30)
    return result.stdout.decode("utf-8").removesuffix("\n")


def write_png(modules, path, quiet=4, scale=4):
    """A greyscale PNG of a module matrix, dark on white, with a quiet zone."""
    size = len(modules)
    span = (size + 2 * quiet) * scale
    lines = []
    for y in range(span):
        row = modules[y // scale - quiet] if quiet <= y // scale < size + quiet else [False] * size
        pixels = bytes(0 if quiet <= x // scale < size + quiet and row[x // scale - quiet] else 255
                       for x in range(span))
        lines.append(b"\0" + pixels)   # filter type 0: the row as it is

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", span, span, 8, 0, 0, 0, 0)   # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"".join(lines))) + chunk(b"IEND", b""))


def encode(page, text, **options):
    return page.evaluate("([text, options]) => window.DinoQR.encode(text, options)", [text, options])


def url_of_length(length):
    """A plausible join or player URL exactly ``length`` bytes long."""
    return (LAN_URL + "user?name=" + "x" * length)[:length]


def round_trip_failures(page, tmp_path, cases, **options):
    """Encode each text in the page, decode the PNG with zbarimg; the cases that did not come back."""
    assert cases, "no cases to round-trip"
    failures = []
    for i, text in enumerate(cases):
        code = encode(page, text, **options)
        png = tmp_path / f"qr-{i}.png"
        write_png(code["modules"], png)
        decoded = decode_qr(png)
        if decoded != text:
            failures.append((text, code["version"], code["mask"], decoded))
    return failures


def open_board(open_tab, **context_options):
    tab = open_tab("/board", **(context_options or PROJECTOR))
    expect(tab.page.locator("#join-url")).not_to_have_text("")
    return tab


def row_texts(page):
    return page.locator("#leaderboard li").evaluate_all(
        "rows => rows.map(li => [li.querySelector('.rank').textContent,"
        " li.querySelector('.name').textContent, li.querySelector('.best').textContent])")


def screenshot_decodes_to(locator, path):
    locator.screenshot(path=str(path))
    return decode_qr(path)


# ================================================================ the QR encoder

@pytest.mark.parametrize("level", ["M", "Q"])
def test_qr_codes_of_every_version_read_back_as_the_same_url(server, open_tab, tmp_path, level):
    # The longest text of each version and one byte more, which must take the next version.
    lengths = [n for capacity in CAPACITY[level] for n in (capacity, capacity + 1)][:-1]
    page = open_tab("/board").page
    versions = [encode(page, url_of_length(n), level=level)["version"] for n in lengths]
    assert versions == [v for v in range(1, 11) for _ in (0, 1)][1:], "a version holds more or less than the standard says"
    assert round_trip_failures(page, tmp_path, [url_of_length(n) for n in lengths], level=level) == []


def test_qr_codes_read_back_with_each_of_the_eight_masks(server, open_tab, tmp_path):
    page = open_tab("/board").page
    failures = []
    for mask in range(8):
        text = f"{LAN_URL}user?name=Mask%20{mask}"
        code = encode(page, text, mask=mask)
        assert code["mask"] == mask
        failures += round_trip_failures(page, tmp_path, [text], mask=mask)
    assert failures == []


def test_qr_codes_of_real_addresses_read_back_with_the_chosen_mask(server, open_tab, tmp_path):
    page = open_tab("/board").page
    cases = [
        "http://192.168.1.23:8080/",
        "http://10.0.0.5:8080/",
        "http://[fe80::1c2b:3dff:fe4e:5f60]:8080/",
        "http://192.168.100.200:65535/user?name=Rutu",
        "http://192.168.1.23:8080/user?name=Zo%C3%AB&from=board",
        "http://raspberrypi.local:8080/user?name=" + "A" * 60 + "&from=the-classroom-projector",
        "http://192.168.1.23:8080/user?name=Zoë 🦖",   # UTF-8 bytes, as a browser sends them
    ]
    chosen = {encode(page, text)["mask"] for text in cases}
    assert len(chosen) > 1, "the penalty rules picked the same mask every time"
    assert round_trip_failures(page, tmp_path, cases) == []


def test_text_too_long_for_version_10_is_refused_with_a_reason(server, open_tab):
    page = open_tab("/board").page
    message = page.evaluate("""() => {
        try { window.DinoQR.encode('x'.repeat(214)); return 'no error'; }
        catch (err) { return err.message; } }""")
    assert "214 bytes" in message and "version 10" in message


# ================================================================ the board

def test_qr_code_on_the_board_opens_the_join_address(server, open_tab, tmp_path):
    status, join = http(server.url, "GET", "/join")
    assert status == 200 and join["url"].startswith("http://")
    tab = open_board(open_tab)
    expect(tab.page.locator("#join-url")).to_have_text(join["url"])
    assert screenshot_decodes_to(tab.page.locator("#qr"), tmp_path / "qr.png") == join["url"]
    # and as a camera sees it: the whole screen, not the element alone
    tab.page.screenshot(path=str(tmp_path / "board.png"))
    assert decode_qr(tmp_path / "board.png") == join["url"]


def test_board_shows_the_lan_address_round_title_and_number_playing_from_join(server, open_tab, tmp_path):
    answer = {"url": LAN_URL, "title": "Friday lunch race", "playing": 7}

    def serve_join(page):
        page.route("**/join", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(answer)))
    tab = open_tab("/board", before_load=serve_join, **PROJECTOR)
    page = tab.page
    expect(page.locator("#join-url")).to_have_text(LAN_URL)
    expect(page.locator("#round")).to_have_text("Friday lunch race")
    expect(page.locator("#playing")).to_have_text("7 children playing now")
    assert screenshot_decodes_to(page.locator("#qr"), tmp_path / "qr.png") == LAN_URL


def test_board_falls_back_to_its_own_address_when_join_is_missing(server, open_tab):
    def no_join(page):
        page.route("**/join", lambda route: route.fulfill(status=404, body="{}"))
    tab = open_tab("/board", before_load=no_join, **PROJECTOR)
    expect(tab.page.locator("#join-url")).to_have_text(server.url + "/")
    expect(tab.page.locator("#playing")).to_be_hidden()


def test_every_row_is_readable_from_the_back_and_the_board_fits_the_projector(server, open_tab):
    names = [f"Player {i}" for i in range(11)] + ["W" * 32]   # 12 children, one with the longest name
    for i, name in enumerate(names):
        post_score(server, name, 1000 + 37 * i)
    page = open_board(open_tab).page
    expect(page.locator("#leaderboard li")).to_have_count(10)
    sizes = page.locator("#leaderboard li").evaluate_all("""rows => rows.map(li =>
        [...li.querySelectorAll(':scope > .rank, :scope > .name, :scope > .best')].map(cell => {
            const range = document.createRange();
            range.selectNodeContents(cell);
            return [parseFloat(getComputedStyle(cell).fontSize), range.getBoundingClientRect().height];
        }))""")
    cells = [cell for row in sizes for cell in row]
    assert len(cells) == 30
    assert min(font for font, _ in cells) >= MIN_ROW_TEXT_PX
    assert min(height for _, height in cells) >= MIN_ROW_TEXT_PX
    box = page.evaluate("""() => ({width: innerWidth, height: innerHeight,
        scrollWidth: document.documentElement.scrollWidth, scrollHeight: document.documentElement.scrollHeight,
        lastRow: document.querySelector('#leaderboard li:last-child').getBoundingClientRect().bottom,
        qr: document.getElementById('qr').getBoundingClientRect().bottom,
        url: document.getElementById('join-url').getBoundingClientRect().bottom})""")
    assert (box["scrollWidth"], box["scrollHeight"]) == (1920, 1080), "the board scrolls"
    assert max(box["lastRow"], box["qr"], box["url"]) <= 1080


def test_one_row_per_child_best_first_and_ties_share_a_place(server, open_tab):
    for name, score in [("Rutu", 533), ("Rutu", 91), ("Rutu", 341), ("Bea", 600), ("Bea", 550),
                        ("Cy", 341), ("Dee", 341), ("Eve", 12)]:
        post_score(server, name, score)
    page = open_board(open_tab).page
    expect(page.locator("#leaderboard li")).to_have_count(5)
    assert row_texts(page) == [["1", "Bea", "600"], ["2", "Rutu", "533"], ["3", "Cy", "341"],
                               ["3", "Dee", "341"], ["5", "Eve", "12"]]


def test_only_the_top_ten_children_are_shown(server, open_tab):
    for i in range(13):
        post_score(server, f"Kid {i:02d}", 100 + i)
    page = open_board(open_tab).page
    expect(page.locator("#leaderboard li")).to_have_count(10)
    assert [row[1] for row in row_texts(page)] == [f"Kid {i:02d}" for i in range(12, 2, -1)]


def test_new_score_appears_on_an_open_board_without_reload(server, open_tab):
    post_score(server, "Bea", 300)
    page = open_board(open_tab).page
    expect(page.locator("#leaderboard .name")).to_have_text(["Bea"])
    expect(page.locator("#live")).to_have_text("Live")     # the stream is open
    page.evaluate("window.__sameDocument = true")
    post_score(server, "Rutu", 120)
    expect(page.locator("#leaderboard li").nth(1).locator(".name")).to_have_text("Rutu", timeout=LIVE_MS)
    assert page.evaluate("window.__sameDocument") is True


def test_new_number_one_is_highlighted_for_a_moment(server, open_tab):
    post_score(server, "Bea", 300)
    post_score(server, "Rutu", 200)
    page = open_board(open_tab, **PROJECTOR, reduced_motion="reduce").page
    expect(page.locator("#leaderboard li")).to_have_count(2)
    first = page.locator("#leaderboard li").first
    calm = first.evaluate("li => getComputedStyle(li).backgroundColor")
    post_score(server, "Rutu", 400)
    expect(first.locator(".name")).to_have_text("Rutu", timeout=LIVE_MS)
    assert first.evaluate("li => getComputedStyle(li).backgroundColor") == "rgb(255, 212, 71)" != calm
    expect(page.locator("#announce")).to_have_text("New number 1: Rutu!")
    # a moment, not for ever
    eventually(lambda: first.evaluate("li => getComputedStyle(li).backgroundColor") == calm, 8,
               "the highlight faded")


def test_a_row_that_changes_place_glides_there(server, open_tab):
    post_score(server, "Bea", 300)
    post_score(server, "Rutu", 200)
    page = open_board(open_tab).page
    rutu = page.locator("#leaderboard li", has=page.locator(".name", has_text="Rutu"))
    settled = rutu.evaluate("li => li.getBoundingClientRect().top")
    post_score(server, "Rutu", 400)
    # Sampled within its first frames: on its way up, not yet at the top.
    moving = page.wait_for_function("""() => {
        const li = [...document.querySelectorAll('#leaderboard li')].find(li => li.dataset.name === 'Rutu');
        return li === document.querySelector('#leaderboard li') && li.getAnimations().length > 0
            && li.getBoundingClientRect().top"""
                                    """ > document.getElementById('leaderboard').getBoundingClientRect().top + 1
            ? li.getBoundingClientRect().top : false; }""", timeout=LIVE_MS, polling="raf").json_value()
    top = page.locator("#leaderboard").evaluate("ol => ol.getBoundingClientRect().top")
    assert top < moving <= settled
    eventually(lambda: rutu.evaluate("li => li.getBoundingClientRect().top") == top, 3, "Rutu settled at the top")


def test_a_row_jumps_without_animation_when_the_viewer_asks_for_reduced_motion(server, open_tab):
    post_score(server, "Bea", 300)
    post_score(server, "Rutu", 200)
    page = open_board(open_tab, **PROJECTOR, reduced_motion="reduce").page
    expect(page.locator("#leaderboard li")).to_have_count(2)
    post_score(server, "Rutu", 400)
    expect(page.locator("#leaderboard li").first.locator(".name")).to_have_text("Rutu", timeout=LIVE_MS)
    assert page.evaluate("document.getAnimations().length") == 0


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_name_is_shown_as_text_on_the_board(server, open_tab, name):
    post_score(server, name, 77)
    tab = open_board(open_tab)
    link = tab.page.locator("#leaderboard .name")
    expect(link).to_have_text(name)
    assert tab.page.locator("#leaderboard img, #leaderboard script").count() == 0
    href = urllib.parse.urlsplit(link.get_attribute("href"))
    assert (href.path, urllib.parse.parse_qs(href.query)) == ("/user", {"name": [name]})
    tab.page.wait_for_timeout(300)
    assert tab.dialogs == []


def test_verified_runs_are_marked_with_a_link_to_watch_them(server, open_tab):
    rows = [{"rank": 1, "name": "Bea", "best": 600, "verified": True, "run": "r/17"},
            {"rank": 2, "name": "Rutu", "best": 533, "verified": False, "run": None},
            {"rank": 3, "name": "Cy", "best": 341, "verified": False, "run": "r-18"}]

    def serve_players(page):
        # No live stream: its first event carries the real (empty) standings and overtakes these rows.
        page.route("**/events*", lambda route: route.abort())
        page.route("**/players?limit=10&ties=1",
                   lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(rows)))
    page = open_tab("/board", before_load=serve_players, **PROJECTOR).page
    expect(page.locator("#leaderboard li")).to_have_count(3)
    watch = page.locator("#leaderboard a.watch")
    expect(watch).to_have_count(1)
    expect(watch).to_have_text("\u2713 Watch")
    assert watch.get_attribute("href") == "/?watch=r%2F17"
    assert watch.evaluate("a => a.closest('li').dataset.name") == "Bea"
    assert row_texts(page) == [["1", "Bea", "600"], ["2", "Rutu", "533"], ["3", "Cy", "341"]]


def test_names_open_the_player_page_and_bots_have_a_link(server, open_tab):
    post_score(server, "Zoë", 50)
    page = open_board(open_tab).page
    assert page.locator("a", has_text="Bot standings").get_attribute("href") == "/bots"
    page.locator("#leaderboard .name", has_text="Zoë").click()
    page.wait_for_url("**/user?name=*")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query) == {"name": ["Zoë"]}


def test_board_text_has_enough_contrast(server, open_tab):
    post_score(server, "Bea", 300)
    page = open_board(open_tab).page
    ratios = page.evaluate("""() => {
        const channel = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
        const luminance = rgb => { const [r, g, b] = rgb.match(/[\\d.]+/g).map(Number);
            return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b); };
        const background = el => {
            for (; el; el = el.parentElement) {
                const colour = getComputedStyle(el).backgroundColor;
                if (colour !== 'rgba(0, 0, 0, 0)') return colour;
            }
            return 'rgb(255, 255, 255)';
        };
        const texts = [...document.querySelectorAll('h1, h2, #live, #leaderboard li > *, #join-url, #playing, nav a')];
        return texts.map(el => {
            const [a, b] = [luminance(getComputedStyle(el).color), luminance(background(el))];
            return [el.id || el.className || el.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
        });
    }""")
    assert len(ratios) >= 7
    assert [(what, ratio) for what, ratio in ratios if ratio < MIN_CONTRAST] == []


def test_board_runs_without_console_errors_or_csp_violations(server, open_tab):
    post_score(server, "Bea", 300)
    tab = open_board(open_tab)
    post_score(server, "Rutu", 400)       # a live update, a move and a celebration
    expect(tab.page.locator("#leaderboard li")).to_have_count(2, timeout=LIVE_MS)
    tab.page.wait_for_timeout(1000)
    assert tab.console_errors == []
    assert tab.page_errors == []
    assert tab.csp_violations() == []
    assert [url for url in tab.requests if not same_origin(server, url)] == []
