"""Tests of the HTML report: structure, embedded images, escaping, validation, atomicity,
and a headless-Chromium rendering check (marker ``browser``)."""

from __future__ import annotations

import base64
import errno
import io
import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import in_ci
from crossent import report
from crossent.report import figure_png, write_report

N_CLASSES = 10
IMAGE_SHAPE = (8, 8)
CHROMIUM = Path("/usr/bin/chromium")
SECTION_IDS = ("loss-curve", "confusion", "templates", "entropy-hist")


def make_inputs(n_classes: int = N_CLASSES, image_shape: tuple[int, ...] = IMAGE_SHAPE) -> dict:
    """Synthetic inputs of ``write_report``; class names contain markup on purpose."""
    rng = np.random.default_rng(0)
    diagonal = np.diag(rng.integers(20, 60, n_classes))
    confusion = rng.integers(0, 5, (n_classes, n_classes)) + diagonal  # (C, C) counts
    d = int(np.prod(image_shape))
    waves = [np.sin(np.linspace(0, k + 1, d)) for k in range(n_classes)]
    support = confusion.sum(axis=1)
    return {
        "title": "Report <test> & co",
        "metrics": {"accuracy": 0.912345678, "n_iter": 137, "solver": "lbfgs<x>"},
        "class_names": [f"<b>class {k}</b>" for k in range(n_classes)],
        "confusion": confusion,
        "per_class": {"recall": np.diag(confusion) / support, "support": support},
        "loss_curve": 2.3 * np.exp(-np.arange(150) / 12.0) + 1e-3,
        "coef": np.stack(waves) + 0.1 * rng.normal(size=(n_classes, d)),
        "image_shape": image_shape,
        "pred_entropy": rng.gamma(2.0, 0.3, 400).clip(0, np.log(n_classes)),
    }


class ReportParser(HTMLParser):
    """Collects element ids, ``<img>`` attributes and table cells of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[dict[str, str | None]] = []
        self.tags: set[str] = set()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.add(tag)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "img":
            self.images.append(attributes)
        elif tag == "table":
            self._table = str(attributes.get("id"))
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, ReportParser]:
    path = write_report(tmp_path_factory.mktemp("report") / "report.html", **make_inputs())
    text = path.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    return path, text, parser


def decode_png(src: str | None) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src is not None and src.startswith(prefix), f"not an embedded PNG: {str(src)[:60]}"
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
    assert image.format == "PNG"
    return image.convert("RGB")


def test_every_section_is_present(written: tuple[Path, str, ReportParser]) -> None:
    _, text, parser = written
    assert {*SECTION_IDS, "metrics", "per-class"} <= parser.ids
    assert {str(img.get("id")) for img in parser.images} == set(SECTION_IDS)
    assert all(img.get("alt") for img in parser.images), "every image needs alt text"
    assert text.count("<h2>") >= 6 and "Generated " in text


def test_images_are_nonblank_pngs(written: tuple[Path, str, ReportParser]) -> None:
    _, _, parser = written
    for img in parser.images:
        image = decode_png(img.get("src"))
        width, height = image.size
        assert 300 <= width <= 2000 and 100 <= height <= 2000, (img.get("id"), image.size)
        colours = image.getcolors(maxcolors=width * height) or []
        assert len(colours) > 20, f"{img.get('id')} looks blank: {len(colours)} colours"
        drawn = coloured_pixels(np.asarray(image, dtype=np.int16)) / (width * height)
        assert drawn > 0.003, f"{img.get('id')} has no plot in colour, only {drawn:.2%}"


def test_report_is_self_contained(written: tuple[Path, str, ReportParser]) -> None:
    _, text, parser = written
    assert "http://" not in text and "https://" not in text
    assert not parser.tags & {"script", "link", "iframe", "object", "embed"}
    assert "url(" not in text and "@import" not in text


def test_strings_from_data_are_escaped(written: tuple[Path, str, ReportParser]) -> None:
    _, text, parser = written
    assert "<b>" not in text and "<test>" not in text and "<x>" not in text
    assert "&lt;b&gt;class 3&lt;/b&gt;" in text and "Report &lt;test&gt; &amp; co" in text
    names = [row[0] for row in parser.tables["per-class"][1:]]
    assert names == make_inputs()["class_names"]


def test_tables_hold_the_values(written: tuple[Path, str, ReportParser]) -> None:
    _, _, parser = written
    metrics = dict(parser.tables["metrics"][1:])
    assert metrics == {"accuracy": "0.912346", "n_iter": "137", "solver": "lbfgs<x>"}
    header, *rows = parser.tables["per-class"]
    assert header == ["class", "recall", "support"]
    inputs = make_inputs()
    assert [int(row[2]) for row in rows] == inputs["per_class"]["support"].tolist()
    np.testing.assert_allclose([float(row[1]) for row in rows], inputs["per_class"]["recall"], 1e-5)


def test_optional_sections_are_left_out(tmp_path: Path) -> None:
    inputs = make_inputs(n_classes=3)
    for key in ("per_class", "loss_curve", "image_shape", "pred_entropy"):
        inputs[key] = None
    text = write_report(tmp_path / "eval.html", **inputs).read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    assert {str(img.get("id")) for img in parser.images} == {"confusion"}
    assert "per-class" not in parser.ids and "metrics" in parser.ids


def test_many_classes_show_the_first_hundred_templates(tmp_path: Path) -> None:
    inputs = make_inputs(n_classes=104, image_shape=(2, 3, 3))  # RGB templates
    text = write_report(tmp_path / "many.html", **inputs).read_text(encoding="utf-8")
    assert "first 100 of 104 classes" in text and 'id="templates"' in text


def test_loss_axis_is_logarithmic_only_over_two_decades() -> None:
    wide = report._plot_loss(np.geomspace(10.0, 0.01, 30))
    narrow = report._plot_loss(np.linspace(10.0, 0.2, 30))
    assert wide.axes[0].get_yscale() == "log" and narrow.axes[0].get_yscale() == "linear"


def test_the_resume_point_is_marked() -> None:
    loss = np.geomspace(10.0, 1.0, 30)
    ax = report._plot_loss(loss, resumed_at=12).axes[0]
    marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [12, 12]]
    assert len(marks) == 1 and marks[0].get_linestyle() == "--"
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["resumed after iteration 12"]
    plain = report._plot_loss(loss).axes[0]
    assert len(plain.get_lines()) == 1 and plain.get_legend() is None


def test_the_report_says_where_a_run_was_resumed(tmp_path: Path) -> None:
    inputs = make_inputs() | {"loss_curve": np.geomspace(10.0, 1.0, 30), "resumed_at": 12}
    text = write_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    assert re.search(r'id="loss-curve" alt="Objective over 30 iterations, [^"]*, resumed after '
                     r'iteration 12"', text)  # fmt: skip


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
def test_a_write_error_names_the_report_not_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")

    def fail(name: object = None) -> None:  # as the OS reports it: about the temporary file
        raise OSError(code, os.strerror(code), name)

    if call == "write":
        real_fdopen = os.fdopen

        def fdopen(fd: int, *args: object, **kwargs: object) -> object:
            file = real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]
            file.write = lambda data: fail()
            return file

        monkeypatch.setattr(os, "fdopen", fdopen)
    elif call == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: fail())
    else:
        monkeypatch.setattr(os, "replace", lambda src, dst: fail(src))
    with pytest.raises(OSError) as caught:
        write_report(target, **make_inputs(n_classes=3))
    assert caught.value.errno == code and caught.value.filename == str(target)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert target.read_text(encoding="utf-8") == "old report"


def test_figure_png_renders_bytes() -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    png = figure_png(fig, dpi=50)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(png)).size == (100, 50)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"confusion": np.ones((10, 9), dtype=int)}, "confusion"),
        ({"confusion": np.ones((9, 9), dtype=int)}, "class_names"),
        ({"confusion": -np.ones((10, 10), dtype=int)}, "confusion"),
        ({"coef": np.ones((9, 64))}, "coef"),
        ({"image_shape": (8, 7)}, "image_shape"),
        ({"image_shape": (4, 4, 4)}, "image_shape"),
        ({"per_class": {"recall": np.ones(9)}}, "per_class"),
        ({"loss_curve": []}, "loss_curve"),
        ({"pred_entropy": np.ones((4, 2))}, "pred_entropy"),
        ({"resumed_at": 0}, "resumed_at"),
        ({"resumed_at": 150}, "resumed_at"),
        ({"resumed_at": 2.5}, "resumed_at"),
        ({"resumed_at": True}, "resumed_at"),
        ({"resumed_at": 3, "loss_curve": None}, "resumed_at"),
    ],
)
def test_bad_inputs_raise(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_report(tmp_path / "bad.html", **{**make_inputs(), **change})
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(target, **make_inputs(n_classes=3))
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert target.read_text(encoding="utf-8") == "old report"


def test_pyplot_is_never_imported(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from crossent.report import write_report
        write_report({str(tmp_path / "r.html")!r}, title="t", metrics={{}}, class_names=["a", "b"],
                     confusion=np.eye(2, dtype=int), pred_entropy=np.ones(3))
        assert "matplotlib.pyplot" not in sys.modules, "report imported pyplot"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


# --- headless browser -------------------------------------------------------------------


def screenshot(html_path: Path, workdir: Path) -> np.ndarray:
    """Screenshot ``html_path`` in headless Chromium; return the (3000, 1200, 3) pixels."""
    workdir.mkdir()
    shot = workdir / "shot.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={workdir / 'profile'}", "--hide-scrollbars",
        "--window-size=1200,3000", f"--screenshot={shot}", html_path.resolve().as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=workdir)
    assert result.returncode == 0 and shot.exists(), f"chromium failed:\n{result.stderr[-2000:]}"
    return np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)


def coloured_pixels(pixels: np.ndarray) -> int:
    """Pixels whose channels differ markedly: plots are coloured, text is black or grey."""
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())


def require_chromium(path: Path = CHROMIUM) -> Path:
    """``path`` if Chromium is there; if not, skip with the reason, or fail in CI (which
    must run the browser test: ``.ci/run`` installs Chromium and sets ``CI=true``)."""
    if path.exists():
        return path
    reason = f"{path} is missing: run `apt-get install -y chromium` (CI installs it)"
    if in_ci():
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        ("", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
        ("true", pytest.fail.Exception),
    ],
)
def test_missing_chromium_skips_outside_ci_and_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type
) -> None:
    monkeypatch.setenv("CI", ci)
    missing = tmp_path / "no-chromium"
    with pytest.raises(outcome, match=re.escape(f"{missing} is missing")):
        require_chromium(missing)
    present = tmp_path / "chromium"
    present.touch()
    assert require_chromium(present) == present  # found: neither skip nor fail


@pytest.mark.browser
def test_browser_draws_the_plots(written: tuple[Path, str, ReportParser], tmp_path: Path) -> None:
    """Chromium shows every plot: the page has colour, and it goes when an image is removed."""
    require_chromium()
    path, text, _ = written
    real = screenshot(path, tmp_path / "real")
    non_white = float((real.min(axis=2) < 235).mean())
    assert non_white > 0.08, f"only {non_white:.1%} of the page is not white"
    colour = coloured_pixels(real)

    # Controls: the same page without its images, then without one image at a time.
    controls = {"all": r"<img\b[^>]*>"} | {i: rf'<img id="{i}"[^>]*>' for i in SECTION_IDS}
    lost = {}
    for name, pattern in controls.items():
        control = tmp_path / f"control-{name}.html"
        control.write_text(re.sub(pattern, "", text), encoding="utf-8")
        lost[name] = colour - coloured_pixels(screenshot(control, tmp_path / name))
    assert colour > 100_000 and lost["all"] > 0.98 * colour, (colour, lost)
    # The loss curve is a thin line; the other plots are filled with colour.
    minimum = {"loss-curve": 800, "confusion": 50_000, "templates": 20_000, "entropy-hist": 20_000}
    for name, pixels in minimum.items():
        assert lost[name] > pixels, f"{name} adds only {lost[name]} coloured pixels: {lost}"


# --------------------------------------------------------------------------- top features


def top_features_table(tmp_path: Path, **overrides: object) -> list[list[str]]:
    """The rows of ``<table id="top-features">`` of a report without image_shape."""
    inputs = make_inputs(n_classes=3, image_shape=(20,)) | {"image_shape": None} | overrides
    text = write_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    assert not any(img.get("id") == "templates" for img in parser.images)  # no picture
    return parser.tables["top-features"]


def test_top_features_by_name_largest_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(3, 20))  # (C, d), distinct weights
    names = [f"word<{j}>" for j in range(20)]
    rows = top_features_table(tmp_path, coef=coef, feature_names=names)
    assert rows[0] == ["class", *(str(r) for r in range(1, report.TOP_FEATURES + 1))]
    for k, row in enumerate(rows[1:]):
        order = np.argsort(-coef[k], kind="stable")[: report.TOP_FEATURES]  # reference ranking
        expected = [f"{names[j]} ({coef[k, j]:+.4g})" for j in order]
        assert row == [f"<b>class {k}</b>", *expected]


def test_top_features_without_names_are_numbered_from_the_first_index(tmp_path: Path) -> None:
    coef = np.zeros((3, 4))
    coef[0, 2], coef[1, 0], coef[2, 3] = 5.0, 4.0, 3.0  # each class's largest
    rows = top_features_table(tmp_path, coef=coef, first_feature_number=1)
    assert [row[1] for row in rows[1:]] == ["feature 3 (+5)", "feature 1 (+4)", "feature 4 (+3)"]
    assert len(rows[0]) == 1 + 4  # fewer features than TOP_FEATURES: all of them


def test_top_features_names_must_fit_coef(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="feature_names has 2 names, coef has 20 features"):
        top_features_table(tmp_path, feature_names=["a", "b"])
