"""Rendering one screenshot of the bundled set with PIL: fonts, themes, the window and its elements,
scrolling, an occluding window, then sensor-like noise or JPEG artefacts — all drawn from the seed,
so the same seed renders the same pixels on any machine with the same fonts (Debian
``fonts-dejavu-core`` and ``fonts-liberation2``, installed by ``make ocr-deps``; matplotlib's copy of
DejaVu Sans is the fallback).
"""

from __future__ import annotations

import io
import random
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.screens.workflows import (
    DEFAULT_SEED,
    DEFAULT_VARIANTS,
    ScreenVariant,
    ui_text,
    variant_info,
)

FONT_FOLDERS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation2",
                "/usr/share/fonts/truetype/liberation")
# (regular, bold) file names; the first pair found is always there (DejaVu), the others add variety.
FONT_FAMILIES = (("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"), ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
                 ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"))
ACCENTS = ((0, 103, 192), (26, 115, 232), (98, 0, 238), (0, 128, 96), (200, 60, 40), (52, 73, 94))

_VALUES: dict[str, dict[str, list[str]]] = {
    "name": {"en": ["Emily Carter", "James Miller", "Olivia Brown", "Daniel Wilson"],
             "fr": ["Camille Dubois", "Lucas Martin", "Chloé Bernard", "Hugo Lefèvre"],
             "ru": ["Анна Смирнова", "Иван Петров", "Мария Кузнецова", "Дмитрий Соколов"]},
    "city": {"en": ["Conference room B, London", "Main office, Boston", "Online meeting"],
             "fr": ["Salle de réunion B, Lyon", "Bureau principal, Paris", "Réunion en ligne"],
             "ru": ["Переговорная Б, Москва", "Главный офис, Казань", "Онлайн-встреча"]},
    "address": {"en": ["12 Baker Street, London", "450 Main St, Boston MA"],
                "fr": ["8 rue de la Paix, Paris", "14 avenue Jean Jaurès, Lyon"],
                "ru": ["ул. Ленина, д. 10, Москва", "Невский пр., 28, Санкт-Петербург"]},
    "subject": {"en": ["Quarterly report draft", "Meeting notes", "Invoice for March"],
                "fr": ["Brouillon du rapport trimestriel", "Compte rendu de réunion", "Facture de mars"],
                "ru": ["Черновик квартального отчёта", "Протокол совещания", "Счёт за март"]},
    "body": {"en": ["Hi team, please find the report attached. Let me know if you have any questions. Best regards"],
             "fr": ["Bonjour à tous, vous trouverez le rapport en pièce jointe. N'hésitez pas à me poser vos "
                    "questions. Cordialement"],
             "ru": ["Коллеги, добрый день! Отчёт во вложении. Если будут вопросы, пишите. С уважением"]},
    "event": {"en": ["Team meeting", "Project review", "Dentist appointment"],
              "fr": ["Réunion d'équipe", "Revue de projet", "Rendez-vous chez le dentiste"],
              "ru": ["Совещание команды", "Обзор проекта", "Приём у стоматолога"]},
    "query": {"en": ["cordless drill", "weather tomorrow", "python tutorial"],
              "fr": ["perceuse sans fil", "météo demain", "tutoriel python"],
              "ru": ["дрель аккумуляторная", "погода завтра", "учебник python"]},
    "result": {"en": ["Best {q} of 2024 — reviews and prices", "{q} — Wikipedia", "Buy {q} online, free delivery",
                      "How to choose a {q}: a buyer's guide", "{q} deals and discounts"],
               "fr": ["Meilleur {q} 2024 — avis et prix", "{q} — Wikipédia", "Acheter {q} en ligne, livraison gratuite",
                      "Comment choisir : guide d'achat {q}", "{q} : promotions et réductions"],
               "ru": ["Лучшие {q} 2024 — отзывы и цены", "{q} — Википедия", "Купить {q} онлайн, бесплатная доставка",
                      "Как выбрать: {q}, советы покупателю", "{q}: скидки и акции"]},
    "format": {"en": ["PDF document (*.pdf)", "Word document (*.docx)", "Plain text (*.txt)"],
               "fr": ["Document PDF (*.pdf)", "Document Word (*.docx)", "Texte brut (*.txt)"],
               "ru": ["Документ PDF (*.pdf)", "Документ Word (*.docx)", "Обычный текст (*.txt)"]},
    "printer": {"en": ["HP LaserJet Pro (Office)", "Canon PIXMA", "Microsoft Print to PDF"],
                "fr": ["HP LaserJet Pro (Bureau)", "Canon PIXMA", "Imprimer en PDF"],
                "ru": ["HP LaserJet Pro (Офис)", "Canon PIXMA", "Печать в PDF"]},
}
_FILES = ["report_2024.docx", "budget.xlsx", "photo_0042.jpg", "notes.txt", "presentation.pptx", "invoice_march.pdf",
          "contract_draft.docx", "data_export.csv", "README.md", "holiday.png", "thesis_final.pdf", "backup.zip"]
_SSIDS = ["Home-5G", "Livebox-3F2A", "Cafe_Guest", "Office-WiFi", "TP-Link_8C21", "Freebox-9A7B", "Beeline_2G"]


@cache
def _font_files() -> tuple[tuple[str, str], ...]:
    """Font families found on this machine, DejaVu Sans first (from Debian, else matplotlib's copy)."""
    found = []
    for regular, bold in FONT_FAMILIES:
        for folder in FONT_FOLDERS:
            if (Path(folder) / regular).is_file() and (Path(folder) / bold).is_file():
                found.append((str(Path(folder) / regular), str(Path(folder) / bold)))
                break
    if not found:
        import matplotlib

        fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        found.append((str(fonts / "DejaVuSans.ttf"), str(fonts / "DejaVuSans-Bold.ttf")))
    return tuple(found)


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


class _Theme:
    def __init__(self, dark: bool, accent: tuple[int, int, int], rng: random.Random) -> None:
        self.dark = dark
        self.accent = accent
        shade = rng.randint(-8, 8)
        if dark:
            self.desktop = (20 + shade, 30 + shade, 48 + shade)
            self.window, self.panel, self.field = (32, 33, 36), (41, 42, 46), (52, 53, 58)
            self.text, self.muted, self.border = (232, 232, 232), (160, 164, 170), (80, 82, 88)
        else:
            self.desktop = (60 + shade, 110 + shade, 160 + shade)
            self.window, self.panel, self.field = (255, 255, 255), (243, 243, 245), (255, 255, 255)
            self.text, self.muted, self.border = (28, 28, 30), (100, 104, 110), (190, 192, 198)


class _Painter:
    """Draws one screen; ``y`` walks down the content column as elements are placed."""

    def __init__(self, draw: ImageDraw.ImageDraw, theme: _Theme, fonts: tuple[str, str], size: int,
                 rng: random.Random) -> None:
        self.draw, self.theme, self.rng = draw, theme, rng
        self.regular, self.bold = fonts
        self.size = size

    def font(self, scale: float = 1.0, bold: bool = False) -> ImageFont.FreeTypeFont:
        return _font(self.bold if bold else self.regular, max(9, round(self.size * scale)))

    def text(self, xy: tuple[int, int], text: str, *, scale: float = 1.0, bold: bool = False,
             fill: tuple[int, int, int] | None = None) -> int:
        font = self.font(scale, bold)
        self.draw.text(xy, text, font=font, fill=fill or self.theme.text)
        return int(font.getbbox(text or " ")[2])

    def box(self, box: tuple[int, int, int, int], *, fill: tuple[int, int, int] | None = None,
            outline: tuple[int, int, int] | None = None, radius: int = 4) -> None:
        self.draw.rounded_rectangle(box, radius=radius, fill=fill, outline=outline)


def _value(kind: str, lang: str, rng: random.Random) -> str:
    if kind in _VALUES:
        return rng.choice(_VALUES[kind][lang])
    if kind == "email":
        return rng.choice(["emily.carter", "lucas.martin", "ivan.petrov", "team", "anna.s"]) + "@" + rng.choice(
            ["example.com", "mail.fr", "yandex.ru", "company.org"])
    if kind == "password":
        return "•" * rng.randint(8, 14)
    if kind == "ip":
        return f"192.168.{rng.randint(0, 9)}.{rng.randint(2, 254)}"
    if kind == "number":
        return str(rng.randint(1, 5))
    if kind == "card":
        return " ".join(f"{rng.randint(0, 9999):04d}" for _ in range(4))
    if kind == "expiry":
        return f"{rng.randint(1, 12):02d}/{rng.randint(26, 31)}"
    if kind == "cvv":
        return "•••"
    if kind == "date":
        return f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2025"
    if kind == "time":
        return f"{rng.randint(8, 18):02d}:{rng.choice(['00', '15', '30', '45'])}"
    if kind == "filename":
        return rng.choice(_FILES).rsplit(".", 1)[0]
    if kind == "resolution":
        return rng.choice(["1920 × 1080", "2560 × 1440", "1366 × 768"])
    if kind == "scale":
        return rng.choice(["100 %", "125 %", "150 %"])
    return kind  # a literal value written in ui_text.json


def _element_height(painter: _Painter, element: list[Any], label_left: bool) -> int:
    unit = painter.size
    kind = element[0]
    if kind == "field" or kind == "select":
        return int(unit * (2.3 if label_left or not element[1] else 3.9))
    if kind == "list":
        return int(unit * 1.9 * 5 + (unit * 1.6 if element[1] else 0))
    if kind == "body":
        return int(unit * 9)
    if kind == "buttons":
        return int(unit * 3.0)
    if kind == "slider":
        return int(unit * 3.2)
    return int(unit * 2.0)


def _draw_element(p: _Painter, element: list[Any], x: int, y: int, width: int, lang: str, label_left: bool,
                  workflow: str) -> None:
    t, rng, unit = p.theme, p.rng, p.size
    kind = element[0]
    if kind in ("field", "select"):
        label, value = element[1], _value(element[2], lang, rng)
        box_x, box_y = x, y
        if label and label_left:
            p.text((x, y + unit // 2), label, fill=t.muted)
            box_x = x + int(width * 0.36)
        elif label:
            p.text((x, y), label, scale=0.9, fill=t.muted)
            box_y = y + int(unit * 1.5)
        box_w = min(width - (box_x - x), int(unit * rng.uniform(22, 34)))
        p.box((box_x, box_y, box_x + box_w, box_y + int(unit * 2.0)), fill=t.field, outline=t.border)
        p.text((box_x + unit // 2, box_y + unit // 3), value)
        if kind == "select":
            p.text((box_x + box_w - unit * 3 // 2, box_y + unit // 3), "▾", fill=t.muted)
    elif kind == "check":
        checked = rng.random() < 0.5
        side = unit
        p.box((x, y + 3, x + side, y + 3 + side), fill=t.accent if checked else t.field, outline=t.border, radius=3)
        if checked:
            p.text((x + 2, y + 1), "✓", scale=0.85, fill=(255, 255, 255))
        p.text((x + side + unit // 2, y + 2), element[1])
    elif kind == "link":
        p.text((x, y), element[1], fill=t.accent)
    elif kind == "text":
        line = element[1].format(amount=f"{rng.randint(20, 900)},{rng.randint(0, 99):02d} €",
                                 count=f"{rng.randint(1, 99)} {rng.randint(100, 999)} 000",
                                 code=f"{rng.randint(0, 0xFFFF):04X}")
        p.text((x, y), line, bold=line.startswith(("Order", "Total", "Итого")))
    elif kind == "slider":
        p.text((x, y), element[1], fill=t.muted)
        track_y = y + int(unit * 2.1)
        length = min(width, unit * 24)
        p.draw.rectangle((x, track_y, x + length, track_y + 4), fill=t.border)
        knob = x + int(length * rng.uniform(0.2, 0.9))
        p.draw.rectangle((x, track_y, knob, track_y + 4), fill=t.accent)
        p.draw.ellipse((knob - unit // 2, track_y - unit // 2 + 2, knob + unit // 2, track_y + unit // 2 + 2),
                       fill=t.accent)
    elif kind == "columns":
        for i, name in enumerate(element[1]):
            p.text((x + int(width * (0, 0.55, 0.75)[i]), y), name, bold=True, scale=0.9, fill=t.muted)
        p.draw.line((x, y + int(unit * 1.6), x + width, y + int(unit * 1.6)), fill=t.border)
    elif kind == "list":
        _draw_list(p, element, x, y, width, lang)
    elif kind == "body":
        p.box((x, y, x + width, y + int(unit * 8.5)), fill=t.field, outline=t.border)
        words = _value("body", lang, rng).split()
        line, yy = "", y + unit // 2
        for word in words:
            if p.font().getbbox(line + " " + word)[2] > width - unit * 2 and line:
                p.text((x + unit // 2, yy), line)
                line, yy = word, yy + int(unit * 1.5)
            else:
                line = f"{line} {word}".strip()
        p.text((x + unit // 2, yy), line)
    elif kind == "buttons":
        labels = list(element[1])
        bx = x if rng.random() < 0.5 else None
        widths = [int(p.font().getbbox(label)[2]) + unit * 2 for label in labels]
        if bx is None:  # right-aligned row, the primary button last as many toolkits do
            labels, widths = labels[::-1], widths[::-1]
            bx = x + max(0, width - sum(widths) - unit * (len(labels) - 1))
        primary = element[1][0]
        for label, w in zip(labels, widths, strict=True):
            is_primary = label == primary
            p.box((bx, y, bx + w, y + int(unit * 2.2)), fill=t.accent if is_primary else t.panel,
                  outline=None if is_primary else t.border)
            p.text((bx + unit, y + unit // 3), label, fill=(255, 255, 255) if is_primary else t.text)
            bx += w + unit


def _draw_list(p: _Painter, element: list[Any], x: int, y: int, width: int, lang: str) -> None:
    t, rng, unit = p.theme, p.rng, p.size
    if element[1]:
        p.text((x, y), element[1], bold=True)
        y += int(unit * 1.6)
    kind = element[2]
    row_h = int(unit * 1.9)
    selected = rng.randrange(5)
    for row in range(5):
        top = y + row * row_h
        if row == selected and kind != "results":
            p.draw.rectangle((x - 4, top - 2, x + width, top + row_h - 4), fill=t.panel)
        if kind == "ssid":
            bars = rng.randint(1, 4)
            for b in range(4):
                height = 4 + b * 3
                p.draw.rectangle((x + b * 5, top + unit - height + 4, x + b * 5 + 3, top + unit + 4),
                                 fill=t.text if b < bars else t.border)
            p.text((x + unit * 2, top), rng.choice(_SSIDS))
        elif kind == "files":
            name = rng.choice(_FILES)
            p.draw.rectangle((x, top + 3, x + unit - 2, top + unit), outline=t.muted)
            p.text((x + unit + 6, top), name)
            p.text((x + int(width * 0.55), top), f"{rng.randint(1, 990)} KB", fill=t.muted)
            p.text((x + int(width * 0.75), top), f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2024",
                   fill=t.muted)
        else:  # search results: title (accent), then a URL line
            query = _value("query", lang, rng)
            p.text((x, top), rng.choice(_VALUES["result"][lang]).format(q=query), fill=t.accent)
            p.text((x, top + int(unit * 1.0)), f"https://www.{rng.choice(['shop', 'wiki', 'news'])}.example/"
                   f"{query.split()[0]}", scale=0.75, fill=t.muted)


def render_screen(workflow_id: str, variant: int, *, seed: int = DEFAULT_SEED,
                  variants: int = DEFAULT_VARIANTS) -> tuple[Image.Image, ScreenVariant]:
    """One screenshot of a workflow (deterministic for the seed), before any noise or JPEG step."""
    info = variant_info(workflow_id, variant, seed, variants)
    spec = ui_text()[workflow_id]
    labels = spec[info.lang]
    rng = random.Random(f"{seed}:{workflow_id}:{variant}:draw")
    theme = _Theme(info.theme == "dark", rng.choice(ACCENTS), rng)
    fonts = rng.choice(_font_files())
    unit = rng.choice((13, 14, 15, 16)) if info.width >= 1280 else rng.choice((12, 13, 14))
    image = Image.new("RGB", (info.width, info.height), theme.desktop)
    draw = ImageDraw.Draw(image)
    p = _Painter(draw, theme, fonts, unit, rng)
    # Taskbar with a clock: every desktop screenshot has one.
    bar_h = unit * 2 + 8
    draw.rectangle((0, info.height - bar_h, info.width, info.height),
                   fill=(18, 18, 20) if theme.dark else (225, 228, 232))
    p.text((info.width - unit * 5, info.height - bar_h + 8), f"{rng.randint(7, 22):02d}:{rng.randint(0, 59):02d}",
           fill=theme.text if theme.dark else (40, 40, 40))
    alert = spec["kind"] == "alert"
    win_w = int(info.width * (rng.uniform(0.35, 0.5) if alert else rng.uniform(0.55, 0.9)))
    win_h = int((info.height - bar_h) * (rng.uniform(0.35, 0.5) if alert else rng.uniform(0.7, 0.95)))
    win_x = rng.randint(0, info.width - win_w)
    win_y = rng.randint(0, info.height - bar_h - win_h)
    p.box((win_x, win_y, win_x + win_w, win_y + win_h), fill=theme.window, outline=theme.border, radius=8)
    # Title bar: plain, or the accent colour with white text (a dark region in a light theme).
    title_h = unit * 2 + 6
    coloured = rng.random() < 0.4
    title_fill = theme.accent if coloured else theme.panel
    draw.rectangle((win_x + 1, win_y + 1, win_x + win_w - 1, win_y + title_h), fill=title_fill)
    p.text((win_x + unit, win_y + 4), f"{labels['title']} — {labels['app']}", scale=0.95,
           fill=(255, 255, 255) if coloured else theme.text)
    for i, colour in enumerate(((230, 80, 70), (240, 190, 60), (90, 190, 90))):
        cx = win_x + win_w - unit * (2 * i + 2)
        draw.ellipse((cx - 5, win_y + title_h // 2 - 5, cx + 5, win_y + title_h // 2 + 5), fill=colour)
    body_top = win_y + title_h + unit
    content_x = win_x + unit * 2 + rng.randint(0, unit * 2)
    content_w = win_w - (content_x - win_x) - unit * 2
    if "nav" in labels:  # a sidebar: settings pages, the places of a file dialog
        nav_w = int(win_w * rng.uniform(0.2, 0.28))
        draw.rectangle((win_x + 1, win_y + title_h + 1, win_x + nav_w, win_y + win_h - 1), fill=theme.panel)
        current = labels["nav"].index(labels["title"]) if labels["title"] in labels["nav"] else rng.randrange(
            len(labels["nav"]))
        for i, entry in enumerate(labels["nav"]):
            yy = body_top + i * int(unit * 2.2)
            if i == current:
                draw.rectangle((win_x + 4, yy - 4, win_x + nav_w - 4, yy + int(unit * 1.6)), fill=theme.field)
            p.text((win_x + unit, yy), entry, bold=i == current)
        content_x = win_x + nav_w + unit * 2
        content_w = win_w - nav_w - unit * 4
    label_left = rng.random() < 0.4
    items = [list(item) for item in labels["items"]]
    # Element order varies, but buttons stay last and a file list stays under its column header.
    movable = [i for i, item in enumerate(items) if item[0] in ("field", "check", "select", "slider", "link")]
    if len(movable) > 2 and rng.random() < 0.6:
        shuffled = [items[i] for i in movable]
        rng.shuffle(shuffled)
        for i, item in zip(movable, shuffled, strict=True):
            items[i] = item
    scroll = rng.choice((0, 0, 0, unit * 2, unit * 4))
    y = body_top - scroll
    if rng.random() < 0.8 and not alert:
        p.text((content_x, y), labels["heading"], scale=1.45, bold=True)
        y += int(unit * 2.8)
    elif alert:
        draw.ellipse((content_x, y, content_x + unit * 2, y + unit * 2), fill=(210, 50, 50))
        p.text((content_x + unit * 3 // 4, y + 1), "!", bold=True, scale=1.1, fill=(255, 255, 255))
        p.text((content_x + unit * 3, y), labels["heading"], scale=1.2, bold=True)
        y += int(unit * 3)
    spacing = rng.uniform(0.4, 1.0)
    for item in items:
        height = _element_height(p, item, label_left)
        if y + height > win_y + win_h - unit:
            break  # what does not fit is cut off, as in a window too small for its content
        if y >= win_y + title_h:
            _draw_element(p, item, content_x, y, content_w, info.lang, label_left, workflow_id)
        y += height + int(unit * spacing)
    # Partial occlusion: another window or a notification over part of this one.
    if rng.random() < 0.3:
        ow, oh = int(win_w * rng.uniform(0.25, 0.45)), int(win_h * rng.uniform(0.2, 0.4))
        ox = rng.choice((win_x - ow // 3, win_x + win_w - ow * 2 // 3))
        oy = rng.randint(win_y, win_y + win_h - oh)
        other = _Theme(rng.random() < 0.5, rng.choice(ACCENTS), rng)
        p.box((ox, oy, ox + ow, oy + oh), fill=other.window, outline=other.border, radius=8)
        draw.rectangle((ox + 1, oy + 1, ox + ow - 1, oy + title_h), fill=other.panel)
        p.text((ox + unit, oy + 4), rng.choice(["Music", "Musique", "Музыка", "Terminal", "Notes"]), fill=other.text)
    return image, info


def apply_artefacts(image: Image.Image, artefacts: str, rng: random.Random) -> tuple[Image.Image, str]:
    """Sensor-like noise and/or JPEG re-encoding; returns the image and the file suffix to save it with."""
    suffix = ".png"
    if "noise" in artefacts:
        pixels = np.asarray(image, dtype=np.int16)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(3, 8), pixels.shape)
        image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    if "jpeg" in artefacts:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(35, 70))
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
        suffix = ".jpg"
    return image, suffix
