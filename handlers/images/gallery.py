"""A contact sheet for a sweep: every variant × seed, its parameters and measures under it.

One row per variant (the swept parameters without the seed), one column per seed, so that a
person can judge the sweep by eye. Written twice: a PNG (for the session document) and a
small self-contained HTML page (thumbnails inlined, nothing fetched). The best variant is
framed only when the ranking rests on measures; otherwise the sheet says that nothing could
be ranked.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .compare import BACKGROUND, BAD, GOOD, OPEN, PNG_COMPRESSION, TEXT, font

THUMB = 256
CAPTION_LINES = 4
LINE = 18
PAD = 12
HEADER = 40
BEST = (255, 210, 0)

# Grain verdicts a ranking can rest on: the image was measured against a reference.
MEASURED = {"less grain", "blur not checked", "not less grain", "grain coarser", "detail lost"}


@dataclass(frozen=True)
class Cell:
    """One image of the sweep and what is written under it."""

    path: Path
    row: str  # the variant without its seed
    seed: Any
    lines: tuple[str, ...]
    verdict: str
    best: bool


def ranked_on_measures(rows: list[dict[str, Any]]) -> bool:
    """Whether the best (rank 1) row is best because of measures, not because every verdict is
    "not measurable" or there was nothing to compare with."""
    return bool(rows) and min(rows, key=lambda r: r.get("rank", 0)).get("verdict") in MEASURED


def cells(rows: list[dict[str, Any]], resolve: Callable[[str], Path]) -> list[Cell]:
    """Cells from images.evaluate's ranking rows (``resolve`` turns a row's ``path`` into a file)."""
    marked = ranked_on_measures(rows)
    out = []
    for row in rows:
        params = row.get("params") or {}
        label = str(row.get("variant") or Path(row["path"]).stem)
        without_seed = " ".join(p for p in label.split() if not p.startswith("seed=")) or "base"
        measures = (f"grain {_num(row.get('grain_index'))}  ratio {_num(row.get('ratio'))}  "
                    f"detail {_num(row.get('detail_ratio'))}")
        colour = (row.get("colour") or {}).get("verdict") or "colours: no reference"
        face = " (no face)" if (row.get("colour") or {}).get("face") is None else ""
        lines = (f"#{row.get('rank', '?')} {label}", measures, str(row.get("verdict")), f"{colour}{face}")
        out.append(Cell(resolve(row["path"]), without_seed, row.get("seed", params.get("seed")), lines,
                        str(row.get("verdict")), marked and row.get("rank") == 1))
    return out


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def _grid(items: list[Cell]) -> tuple[list[str], list[Any]]:
    rows = list(dict.fromkeys(c.row for c in items))
    seeds = list(dict.fromkeys(c.seed for c in items))
    return rows, seeds


def _thumbnail(path: Path) -> Image.Image:
    """The image made small, decoded once for the sheet and the page (callers never modify it)."""
    stat = path.stat()
    return _small(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _small(path: str, mtime_ns: int, size: int) -> Image.Image:
    with Image.open(path) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
        return thumb


def _tone(verdict: str) -> tuple[int, int, int]:
    return GOOD if verdict == "less grain" else OPEN if verdict in ("blur not checked", "not measurable") else BAD


def render_sheet(items: list[Cell], title: str) -> Image.Image:
    """The contact sheet: rows of variants, columns of seeds, captions under each image."""
    rows, seeds = _grid(items)
    cell_w, cell_h = THUMB + PAD, THUMB + CAPTION_LINES * LINE + PAD
    width = PAD + len(seeds) * cell_w
    height = HEADER + len(rows) * cell_h + PAD
    sheet = Image.new("RGB", (max(width, 420), height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 10), title, fill=TEXT, font=font(18))
    small = font(13)
    for c in items:
        x = PAD + seeds.index(c.seed) * cell_w
        y = HEADER + rows.index(c.row) * cell_h
        thumb = _thumbnail(c.path)
        sheet.paste(thumb, (x, y))
        if c.best:
            draw.rectangle((x - 3, y - 3, x + thumb.width + 2, y + thumb.height + 2), outline=BEST, width=4)
            draw.text((x + 6, y + 4), "BEST", fill=BEST, font=font(18), stroke_width=2, stroke_fill=(0, 0, 0))
        for i, line in enumerate(c.lines):
            fill = _tone(c.verdict) if i == 2 else BEST if (i == 0 and c.best) else TEXT
            draw.text((x, y + thumb.height + 4 + i * LINE), line, fill=fill, font=small)
    return sheet


def _data_uri(path: Path) -> str:
    buffer = io.BytesIO()
    _thumbnail(path).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(items: list[Cell], title: str) -> str:
    """A self-contained page: the same grid as the PNG, thumbnails inlined, captions as text."""
    rows, seeds = _grid(items)
    by_place = {(c.row, c.seed): c for c in items}
    head = "".join(f"<th>seed {html.escape(str(s))}</th>" for s in seeds)
    body = []
    for row in rows:
        tds = []
        for seed in seeds:
            c = by_place.get((row, seed))
            if c is None:
                tds.append("<td></td>")
                continue
            caption = "<br>".join(html.escape(line) for line in c.lines)
            cls = ' class="best"' if c.best else ""
            tds.append(f'<td{cls}><img src="{_data_uri(c.path)}" alt="{html.escape(c.lines[0])}">'
                       f"<div>{'<b>BEST</b><br>' if c.best else ''}{caption}</div></td>")
        body.append(f"<tr><th>{html.escape(row)}</th>{''.join(tds)}</tr>")
    style = ("body{background:#181818;color:#eee;font:13px sans-serif}td,th{vertical-align:top;padding:6px}"
             "img{display:block;max-width:256px}.best img{outline:4px solid #ffd200}")
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{style}</style>"
            f"<h1>{html.escape(title)}</h1><table><tr><th></th>{head}</tr>{''.join(body)}</table>\n")


def write_gallery(rows: list[dict[str, Any]], resolve: Callable[[str], Path], out: Path, title: str) -> dict[str, Path]:
    """Write ``out``.png and ``out``.html for the ranking ``rows``; their paths."""
    items = cells(rows, resolve)
    if not ranked_on_measures(rows):
        title += " — no variant marked best: nothing could be measured"
    png, page = out.with_suffix(".png"), out.with_suffix(".html")
    render_sheet(items, title).save(png, format="PNG", compress_level=PNG_COMPRESSION)
    page.write_text(render_html(items, title), "utf-8")
    return {"png": png, "html": page}
